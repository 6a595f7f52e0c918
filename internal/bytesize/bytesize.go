// Package bytesize reads and writes sizes in bytes with binary unit
// suffixes: the form the port layer takes in string options (a volume's
// "size") and writes in its messages.
package bytesize

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Parse reads a size: a non-negative decimal number, optionally with a
// fraction, then optionally a space and a unit of k, m, g, t or p (any
// case, powers of 1024) with an optional "i" and an optional "b"
// ("512m", "1.5GiB", "20g", "4096", "64 kb"). The result is in bytes,
// rounded down. An error for anything else, or a size past 2⁶³−1 bytes.
// The suffixes are those operators already write for container memory
// sizes, so the same values mean the same sizes.
func Parse(s string) (int64, error) {
	num := strings.TrimRight(s, "bBiIkKmMgGtTpP")
	unit := strings.ToLower(s[len(num):])
	if unit != "" {
		num = strings.TrimSuffix(num, " ")
	}
	if num == "" || num[0] < '0' || num[0] > '9' || strings.ContainsAny(num, "eE+-") {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	var shift uint
	switch strings.TrimSuffix(strings.TrimSuffix(unit, "b"), "i") {
	case "":
		if strings.HasPrefix(unit, "i") {
			return 0, fmt.Errorf("invalid size %q: unknown unit %q", s, unit)
		}
	case "k":
		shift = 10
	case "m":
		shift = 20
	case "g":
		shift = 30
	case "t":
		shift = 40
	case "p":
		shift = 50
	default:
		return 0, fmt.Errorf("invalid size %q: unknown unit %q", s, unit)
	}
	n := math.Floor(f * float64(uint64(1)<<shift))
	if n >= math.MaxInt64 {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return int64(n), nil
}

// Format writes n bytes with the largest binary unit (B, KiB, MiB, GiB,
// TiB, PiB) that keeps the number at 1 or more, rounded to two decimals
// ("512B", "64MiB", "1.5GiB").
func Format(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	f, i := float64(n), 0
	for math.Abs(f) >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	return strconv.FormatFloat(math.Round(f*100)/100, 'f', -1, 64) + units[i]
}
