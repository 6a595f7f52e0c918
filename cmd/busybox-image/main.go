// Command busybox-image writes a busybox image built from Debian's
// busybox-static as a `docker save` archive, ready for `docker load -i`.
//
//	go run ./cmd/busybox-image -o busybox.tar [-t busybox:latest] [--busybox /bin/busybox]
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"

	"github.com/vchproject/vch/internal/busyboximage"
)

func main() {
	out := flag.String("o", "", "output archive path (required; - for stdout)")
	tag := flag.String("t", "busybox:latest", "tag recorded in the archive")
	bin := flag.String("busybox", busyboximage.DefaultBusybox, "static busybox binary to package")
	flag.Parse()
	if err := run(*out, *tag, *bin); err != nil {
		fmt.Fprintln(os.Stderr, "busybox-image:", err)
		os.Exit(1)
	}
}

func run(out, tag, bin string) error {
	if out == "" {
		return fmt.Errorf("-o is required")
	}
	img, err := busyboximage.Build(bin)
	if err != nil {
		return err
	}
	if out == "-" {
		w := bufio.NewWriter(os.Stdout)
		if err := busyboximage.WriteArchive(w, img, tag); err != nil {
			return err
		}
		return w.Flush()
	}
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	w := bufio.NewWriter(f)
	if err := busyboximage.WriteArchive(w, img, tag); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	id, err := img.ConfigName()
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s (%s, image %s)\n", out, tag, id)
	return nil
}
