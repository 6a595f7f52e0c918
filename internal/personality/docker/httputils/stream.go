package httputils

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/docker/go-units"
	"github.com/moby/moby/api/types/jsonstream"
)

// Stream identifiers of Docker's stdcopy framing (Engine API v1.50, "Attach
// to a container": stream format).
const (
	StreamStdin  byte = 0
	StreamStdout byte = 1
	StreamStderr byte = 2
)

// StdWriter frames every Write as one stdcopy frame: an 8-byte header
// {stream, 0, 0, 0, size as big-endian uint32} followed by the payload. It is
// safe for concurrent use; frames from several StdWriters sharing one Mux
// never interleave.
type StdWriter struct {
	mux    *Mux
	stream byte
}

// maxKeptFrame is the largest frame buffer a Mux keeps between writes
// (bytes): room for one 256 KiB chunk of a container's output with its
// header, and for the capacity append rounds that up to.
const maxKeptFrame = 512 << 10

// Mux serialises frame writes to one underlying writer.
type Mux struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte // a frame being written, reused under mu
}

// NewMux returns a Mux writing to w.
func NewMux(w io.Writer) *Mux { return &Mux{w: w} }

// Writer returns the framing writer for stream (StreamStdout or StreamStderr).
func (m *Mux) Writer(stream byte) *StdWriter { return &StdWriter{mux: m, stream: stream} }

// Write writes p as one frame (split if larger than 4 GiB, never in practice).
func (s *StdWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	m := s.mux
	m.mu.Lock()
	defer m.mu.Unlock()
	// Header and payload in one write (one packet, one syscall), from a
	// buffer the Mux keeps: output arrives in chunks of up to 256 KiB,
	// and a fresh frame each time was most of the daemon's garbage
	// while a container wrote at full speed.
	m.buf = append(m.buf[:0], s.stream, 0, 0, 0, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(m.buf[4:], uint32(len(p)))
	m.buf = append(m.buf, p...)
	_, err := m.w.Write(m.buf)
	if cap(m.buf) > maxKeptFrame {
		m.buf = nil
	}
	if err != nil {
		return 0, err
	}
	Flush(m.w)
	return len(p), nil
}

// RawWriter writes through a Mux without framing (TTY streams), flushing
// after each write.
type RawWriter struct{ mux *Mux }

// Raw returns the unframed writer of m.
func (m *Mux) Raw() *RawWriter { return &RawWriter{mux: m} }

// Write writes p unchanged.
func (r *RawWriter) Write(p []byte) (int, error) {
	r.mux.mu.Lock()
	defer r.mux.mu.Unlock()
	n, err := r.mux.w.Write(p)
	Flush(r.mux.w)
	return n, err
}

// ProgressMessage is one line of Docker's JSON progress stream: the
// jsonstream.Message fields plus the legacy "progress" (rendered bar) and
// "error" (text) fields that dockerd still sends and older clients read.
type ProgressMessage struct {
	jsonstream.Message
	ProgressText string `json:"progress,omitempty"`
	ErrorText    string `json:"error,omitempty"`
}

// ProgressBar renders a progress bar like dockerd's ("[==>   ]  1.2MB/3.4MB").
func ProgressBar(current, total int64) string {
	if total <= 0 {
		if current <= 0 {
			return ""
		}
		return fmt.Sprintf("%8v", units.HumanSize(float64(current)))
	}
	const width = 50
	n := min(int(float64(width)*float64(current)/float64(total)), width)
	bar := "[" + strings.Repeat("=", n)
	if n < width {
		bar += ">" + strings.Repeat(" ", width-n-1)
	}
	return fmt.Sprintf("%s] %8v/%v", bar+"", units.HumanSize(float64(current)), units.HumanSize(float64(total)))
}

// JSONStream writes ProgressMessage lines to an HTTP response. The status
// line (200, Content-Type application/json) is written lazily with the first
// message, so a caller that fails before any output can still answer with a
// plain error status, as dockerd does for pull. Safe for concurrent use.
type JSONStream struct {
	mu      sync.Mutex
	w       http.ResponseWriter
	started bool
	enc     *json.Encoder
}

// NewJSONStream returns a stream writing to w.
func NewJSONStream(w http.ResponseWriter) *JSONStream {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return &JSONStream{w: w, enc: enc}
}

// Started reports whether any output has been written.
func (s *JSONStream) Started() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started
}

// Send writes one message line and flushes it.
func (s *JSONStream) Send(m ProgressMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		s.w.Header().Set("Content-Type", "application/json")
		s.w.WriteHeader(http.StatusOK)
		s.started = true
	}
	_ = s.enc.Encode(m) // a client that went away is noticed through ctx
	Flush(s.w)
}

// SendError writes err in band: {"errorDetail":{"message":...},"error":...},
// with the text Message gives.
func (s *JSONStream) SendError(err error) {
	msg := Message(err)
	s.Send(ProgressMessage{Message: jsonstream.Message{Error: &jsonstream.Error{Message: msg}}, ErrorText: msg})
}
