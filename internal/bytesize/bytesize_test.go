package bytesize

import "testing"

func TestParse(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "4096": 4096, "1k": 1 << 10, "1K": 1 << 10, "1kb": 1 << 10, "1KiB": 1 << 10,
		"512m": 512 << 20, "512M": 512 << 20, "1.5g": 3 << 29, "1.5GiB": 3 << 29, "20g": 20 << 30,
		"1t": 1 << 40, "1p": 1 << 50, "64 kb": 64 << 10, "10b": 10, "10B": 10, "2.5": 2,
	} {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "m", "-1", "+1", "1e3", "1x", "1mm", "1 ", " 1", "1.2.3", "1i", "9000p", "0x10", "1kk"} {
		if n, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %d, want an error", in, n)
		}
	}
}

func TestFormat(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0B", 512: "512B", 1 << 10: "1KiB", 16 << 20: "16MiB", 3 << 29: "1.5GiB", 1 << 40: "1TiB", 8 << 30: "8GiB", 1 << 60: "1024PiB", 1000: "1000B", 1536 << 10: "1.5MiB",
	} {
		if got := Format(n); got != want {
			t.Errorf("Format(%d) = %q, want %q", n, got, want)
		}
	}
}
