//go:build !race

package qemu

// raceEnabled reports a -race build.
const raceEnabled = false
