// Command tether is PID 1 inside every vch container VM. It is built static
// (CGO_ENABLED=0) and placed in the guest's initramfs as /init.
package main

import "github.com/vchproject/vch/internal/tether"

func main() { tether.Main() }
