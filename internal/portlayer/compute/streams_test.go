package compute

import (
	"bufio"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestOutputBatchedLines: chunks of both streams, with and without
// newlines, logged through a small max-size: every file stays within it
// (a line is never split across files), the files together hold every
// byte once and in order, each line's offset attribute counts its
// stream's bytes up to its end, the offsets file written at a rotation
// never claims more than the rotated files hold, and loggedOffsets after
// each chunk is what the files hold.
func TestOutputBatchedLines(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "log")
	const maxSize, maxFiles = 64 << 10, 150
	o := newOutput(path, maxSize, maxFiles)
	o.beginRun("r", 0, 0)
	r := rand.New(rand.NewPCG(5, 6))
	want := map[string][]byte{}
	for step := range 300 {
		stream := []string{"stdout", "stderr"}[r.IntN(2)]
		chunk := make([]byte, r.IntN(3000))
		for i := range chunk {
			chunk[i] = "abcdefg\n\x00\x00"[r.IntN(10)]
		}
		o.write(stream, chunk)
		want[stream] = append(want[stream], chunk...)
		if step%20 != 0 {
			continue
		}
		logged := map[string]int64{}
		logged["stdout"], logged["stderr"] = o.loggedOffsets()
		got := readBack(t, path, maxFiles, maxSize)
		for _, s := range []string{"stdout", "stderr"} {
			// What is logged is the stream up to its last newline (or
			// split point): the rest waits in o.partial.
			if int64(len(got[s])) != logged[s] || string(got[s]) != string(want[s][:len(got[s])]) {
				t.Fatalf("%s: the files hold %d bytes (a prefix of what was written: %t), loggedOffsets says %d", s, len(got[s]), string(got[s]) == string(want[s][:min(len(got[s]), len(want[s]))]), logged[s])
			}
		}
		if b, err := os.ReadFile(o.offsetsFile()); err == nil {
			var ro runOffsets
			if err := json.Unmarshal(b, &ro); err != nil || ro.Stdout > logged["stdout"] || ro.Stderr > logged["stderr"] {
				t.Fatalf("offsets file %s (%v) claims more than the log holds (%v)", b, err, logged)
			}
		}
	}
	o.flush()
	got := readBack(t, path, maxFiles, maxSize)
	t.Logf("%d bytes of stdout, %d of stderr in %d files", len(got["stdout"]), len(got["stderr"]), func() int { m, _ := filepath.Glob(path + "*[0-9g]"); return len(m) }())
	for _, s := range []string{"stdout", "stderr"} {
		if string(got[s]) != string(want[s]) {
			t.Errorf("%s: after flush the files hold %d bytes, want the %d written", s, len(got[s]), len(want[s]))
		}
	}
}

// readBack reads the log files oldest first, checks each line's offset
// attribute against the bytes of its stream so far and each file's size
// against maxSize, and returns each stream's bytes.
func readBack(t *testing.T, path string, maxFiles int, maxSize int64) map[string][]byte {
	t.Helper()
	got := map[string][]byte{}
	rotated, _ := filepath.Glob(path + ".*[0-9]")
	if len(rotated) >= maxFiles-1 {
		t.Fatalf("%d files: the test's max-file drops some", len(rotated)+1)
	}
	for i := len(rotated); i >= 0; i-- {
		p := path
		if i > 0 {
			p += "." + strconv.Itoa(i)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		lines := 0
		for sc.Scan() {
			lines++
			var e logEntry
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			got[e.Stream] = append(got[e.Stream], e.Log...)
			if v, ok := strings.CutPrefix(e.Attrs[offsetAttr], "r:"); !ok || v != strconv.Itoa(len(got[e.Stream])) {
				t.Fatalf("%s: a %s line's offset is %q, want r:%d", p, e.Stream, e.Attrs[offsetAttr], len(got[e.Stream]))
			}
		}
		f.Close()
		if st.Size() > maxSize && lines > 1 {
			t.Fatalf("%s: %d bytes in %d lines, past max-size %d", p, st.Size(), lines, maxSize)
		}
	}
	return got
}
