// Package serialauth is the hello that opens a guest channel carried by a
// serial port backed by a network URI (the vSphere driver's channel): at
// power-on the host running the VM connects to the VCH's listener, and
// anything else that can reach the listener could connect too, so before
// the agent protocol (package wire) starts, each side proves it holds the
// VM's secret. It is one line each way, plain ASCII:
//
//	listener: vch-channel v1 NONCE            NONCE: 32 random bytes, hex
//	guest:    vch-channel v1 NAME GUESTMAC
//	listener: ok SERVERMAC                    then TLS 1.3, then the agent's stream
//
// with GUESTMAC = [GuestMAC](secret, NAME, NONCE) and SERVERMAC =
// [ServerMAC](secret, NAME, NONCE), NONCE in the hex form sent.
//
// A serial port is connected long before its guest reads it (at
// power-on), and a UART's start-up discards what it held, so the
// listener's line may reach the guest cut or not at all. The guest then
// sends an empty line, a nudge, and the listener sends the same line
// again (at most MaxNudges times); the guest skips lines that are not a
// listener's hello, and copies of that line, until its answer comes. A
// terminal that is not raw yet echoes what it receives, and a UART
// starting up may drop bytes anywhere in it: the listener skips a line
// that is its own line with bytes left out. The
// secret never crosses the wire, only HMAC-SHA256 over a nonce the
// listener chose for this connection, so a recorded hello is useless on
// another one; the listener's answer lets the guest refuse a listener
// that does not know its secret.
//
// After the listener's answer both sides run TLS 1.3 over the same
// stream, with certificates from the secret ([ServerTLS], [GuestTLS]),
// where the driver asked for it (see tls.go).
//
// The listener's side lives in the vSphere driver; the guest's ([Guest])
// in tether. The package has no dependencies beyond the standard library,
// so tether can link it.
package serialauth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Protocol words and sizes.
const (
	// Magic opens the listener's and the guest's hello lines.
	Magic = "vch-channel v1"
	// SecretBytes is the length of a VM's secret (hex: twice that).
	SecretBytes = 32
	// NonceBytes is the length of the listener's nonce (hex: twice that).
	NonceBytes = 32
	// MaxLine is the longest hello line either side accepts, in bytes
	// without the '\n'.
	MaxLine = 512
	// MaxNudges is how often a guest may ask for the listener's line
	// again, and how many other lines it skips.
	MaxNudges = 8
	// NudgeAfter is how long a guest waits for the listener's line
	// before it nudges, where rw has read deadlines.
	NudgeAfter = time.Second
	// exitWord prefixes the message of ExitMark.
	exitWord = "vch-exit v1 poweroff"
)

// GuestMAC is the MAC a guest named name sends for nonce (hex, as the
// listener sent it): hex(HMAC-SHA256(secret, "vch-channel v1 guest NAME
// NONCE")).
func GuestMAC(secret []byte, name, nonce string) string {
	return mac(secret, Magic+" guest "+name+" "+nonce)
}

// ServerMAC is the MAC the listener answers a good hello with:
// hex(HMAC-SHA256(secret, "vch-channel v1 server NAME NONCE")).
func ServerMAC(secret []byte, name, nonce string) string {
	return mac(secret, Magic+" server "+name+" "+nonce)
}

// ExitMark is the value a guest named name sets guestinfo.vch.exit to
// before it powers itself off, so the VCH tells its own power-off from
// one done behind its back: hex(HMAC-SHA256(secret, "vch-exit v1
// poweroff NAME")).
func ExitMark(secret []byte, name string) string {
	return mac(secret, exitWord+" "+name)
}

func mac(secret []byte, msg string) string {
	return hex.EncodeToString(macBytes(secret, msg))
}

// macBytes is HMAC-SHA256(secret, msg).
func macBytes(secret []byte, msg string) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// ParseSecret decodes a secret in its hex form (as guestinfo holds it).
// ErrRefused unless it is 2*SecretBytes hex digits.
func ParseSecret(s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != SecretBytes {
		return nil, fmt.Errorf("serialauth: secret: want %d hex digits: %w", 2*SecretBytes, ErrRefused)
	}
	return b, nil
}

// ErrRefused is the class of every failed hello: malformed lines, a line
// longer than MaxLine, a listener that does not prove it holds the secret.
var ErrRefused = errors.New("channel hello refused")

// Guest runs the guest's side of the hello on rw for the VM named name
// holding secret: it reads the listener's nonce (nudging as the package
// doc says, and after NudgeAfter of silence if rw has SetReadDeadline),
// answers with its MAC and checks the listener's. On success the agent
// protocol follows on rw; nothing after the listener's line has been
// read. Errors wrap ErrRefused, or are rw's read and write errors (io.EOF
// if the listener hung up).
func Guest(rw io.ReadWriter, name string, secret []byte) error {
	if name == "" || strings.ContainsAny(name, " \n") {
		return fmt.Errorf("serialauth: name %q: %w", name, ErrRefused)
	}
	dl, _ := rw.(interface{ SetReadDeadline(time.Time) error })
	nudge := func() error {
		_, err := rw.Write([]byte("\n"))
		return err
	}
	var hello, nonce string
	for nudges := 0; hello == ""; {
		if dl != nil {
			_ = dl.SetReadDeadline(time.Now().Add(NudgeAfter))
		}
		line, err := ReadLine(rw)
		if err != nil && !(dl != nil && errors.Is(err, os.ErrDeadlineExceeded)) {
			return err
		}
		if err == nil {
			if n, ok := strings.CutPrefix(line, Magic+" "); ok {
				if len(n) != 2*NonceBytes {
					return fmt.Errorf("serialauth: listener's hello %.40q: %w", line, ErrRefused)
				}
				if _, err := hex.DecodeString(n); err != nil {
					return fmt.Errorf("serialauth: listener's nonce is not hex: %w", ErrRefused)
				}
				hello, nonce = line, n
				break
			}
		}
		// Silence, or a cut line: ask again.
		if nudges++; nudges > MaxNudges {
			return fmt.Errorf("serialauth: no hello from the listener after %d nudges: %w", MaxNudges, ErrRefused)
		}
		if err := nudge(); err != nil {
			return err
		}
	}
	if dl != nil {
		_ = dl.SetReadDeadline(time.Time{})
	}
	if _, err := fmt.Fprintf(rw, "%s %s %s\n", Magic, name, GuestMAC(secret, name, nonce)); err != nil {
		return err
	}
	for copies := 0; ; copies++ {
		line, err := ReadLine(rw)
		if err != nil {
			return err
		}
		if line == hello && copies < MaxNudges {
			continue // the answer to a nudge that crossed our reply
		}
		got, ok := strings.CutPrefix(line, "ok ")
		if !ok || !hmac.Equal([]byte(got), []byte(ServerMAC(secret, name, nonce))) {
			return fmt.Errorf("serialauth: the listener does not hold the VM's secret: %w", ErrRefused)
		}
		return nil
	}
}

// ReadLine reads one line from r up to and without its '\n', at most
// MaxLine bytes, one byte at a time so that nothing after the line is
// consumed. Errors: r's (io.EOF included), or ErrRefused for a longer
// line.
func ReadLine(r io.Reader) (string, error) {
	var b []byte
	one := make([]byte, 1)
	for len(b) <= MaxLine {
		n, err := r.Read(one)
		if n == 1 {
			if one[0] == '\n' {
				return string(b), nil
			}
			b = append(b, one[0])
			continue
		}
		if err != nil {
			return "", err
		}
	}
	return "", fmt.Errorf("serialauth: hello longer than %d bytes: %w", MaxLine, ErrRefused)
}
