package serialauth

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/vchproject/vch/internal/testenv"
)

// listener plays the listener's side on c for a VM name holding secret,
// answering with answer(nonce) (the right MAC unless the test says
// otherwise), then writes "agent" and reports what it saw.
func listener(c net.Conn, nonce, name string, secret []byte, answer func(nonce string) string) <-chan error {
	done := make(chan error, 1)
	go func() {
		defer c.Close()
		fmt.Fprintf(c, "%s %s\n", Magic, nonce)
		line, err := ReadLine(c)
		if err != nil {
			done <- err
			return
		}
		if want := Magic + " " + name + " " + GuestMAC(secret, name, nonce); line != want {
			done <- fmt.Errorf("guest's hello %q, want %q", line, want)
			return
		}
		fmt.Fprintf(c, "%s\nagent", answer(nonce))
		done <- nil
	}()
	return done
}

func TestGuest(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, SecretBytes)
	nonce := strings.Repeat("ab", NonceBytes)
	good := func(n string) string { return "ok " + ServerMAC(secret, "c1", n) }
	t.Run("good", func(t *testing.T) {
		g, l := testenv.SocketPair(t)
		done := listener(l, nonce, "c1", secret, good)
		if err := Guest(g, "c1", secret); err != nil {
			t.Fatal(err)
		}
		// Nothing after the listener's line was consumed.
		rest, _ := io.ReadAll(g)
		if string(rest) != "agent" {
			t.Errorf("after the hello the stream holds %q, want %q", rest, "agent")
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
	refused := map[string]func(n string) string{
		"listener without the secret": func(n string) string { return "ok " + ServerMAC(bytes.Repeat([]byte{8}, SecretBytes), "c1", n) },
		"MAC for another name":        func(n string) string { return "ok " + ServerMAC(secret, "c2", n) },
		"no ok":                       func(n string) string { return ServerMAC(secret, "c1", n) },
		"guest's own MAC echoed":      func(n string) string { return "ok " + GuestMAC(secret, "c1", n) },
	}
	for name, answer := range refused {
		t.Run(name, func(t *testing.T) {
			g, l := testenv.SocketPair(t)
			done := listener(l, nonce, "c1", secret, answer)
			if err := Guest(g, "c1", secret); !errors.Is(err, ErrRefused) {
				t.Errorf("Guest = %v, want ErrRefused", err)
			}
			g.Close()
			<-done
		})
	}
}

func TestGuestBadListener(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, SecretBytes)
	for name, hello := range map[string]string{
		"short nonce":   Magic + " abcd\n",
		"nonce not hex": Magic + " " + strings.Repeat("zz", NonceBytes) + "\n",
		"long line":     Magic + " " + strings.Repeat("a", 2*MaxLine) + "\n",
		"only garbage":  strings.Repeat("GET / HTTP/1.0\n", MaxNudges+1),
	} {
		t.Run(name, func(t *testing.T) {
			rw := struct {
				io.Reader
				io.Writer
			}{strings.NewReader(hello), io.Discard}
			if err := Guest(rw, "c1", secret); !errors.Is(err, ErrRefused) {
				t.Errorf("Guest = %v, want ErrRefused", err)
			}
		})
	}
	t.Run("hang-up", func(t *testing.T) {
		rw := struct {
			io.Reader
			io.Writer
		}{strings.NewReader(Magic + " "), io.Discard}
		if err := Guest(rw, "c1", secret); !errors.Is(err, io.EOF) {
			t.Errorf("Guest = %v, want io.EOF", err)
		}
	})
	t.Run("bad name", func(t *testing.T) {
		if err := Guest(bufio.NewReadWriter(bufio.NewReader(strings.NewReader("")), bufio.NewWriter(io.Discard)), "a b", secret); !errors.Is(err, ErrRefused) {
			t.Errorf("Guest = %v, want ErrRefused", err)
		}
	})
}

// TestGuestNudges plays a listener whose first line the guest's UART cut
// (or lost): the guest asks again with an empty line, skips a copy that
// crossed its answer, and the hello succeeds.
func TestGuestNudges(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, SecretBytes)
	nonce := strings.Repeat("cd", NonceBytes)
	line := Magic + " " + nonce + "\n"
	for name, first := range map[string]string{
		"cut":  line[5:],
		"lost": "", // nothing: the guest nudges after NudgeAfter
	} {
		t.Run(name, func(t *testing.T) {
			g, l := testenv.SocketPair(t)
			done := make(chan error, 1)
			go func() {
				defer l.Close()
				if first != "" {
					io.WriteString(l, first)
				}
				got, err := ReadLine(l)
				if err != nil || got != "" {
					done <- fmt.Errorf("want a nudge, got %q, %v", got, err)
					return
				}
				// The line again, and once more as if a second nudge had
				// crossed the guest's answer.
				io.WriteString(l, line+line)
				got, err = ReadLine(l)
				if want := Magic + " c1 " + GuestMAC(secret, "c1", nonce); err != nil || got != want {
					done <- fmt.Errorf("guest's hello %q, %v; want %q", got, err, want)
					return
				}
				io.WriteString(l, "ok "+ServerMAC(secret, "c1", nonce)+"\n")
				done <- nil
			}()
			if err := Guest(g, "c1", secret); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			g.Close()
		})
	}
}

func TestParseSecret(t *testing.T) {
	s := strings.Repeat("0f", SecretBytes)
	b, err := ParseSecret(s + "\n")
	if err != nil || len(b) != SecretBytes || b[0] != 0x0f {
		t.Fatalf("ParseSecret = %x, %v", b, err)
	}
	for _, bad := range []string{"", "0f", s + "00", strings.Repeat("zz", SecretBytes)} {
		if _, err := ParseSecret(bad); !errors.Is(err, ErrRefused) {
			t.Errorf("ParseSecret(%q) = %v, want ErrRefused", bad, err)
		}
	}
}

// TestKnownMACs pins the MACs to figures computed outside Go (openssl
// dgst -sha256 -hmac with the key "k" x 32), so neither side can drift
// from the documented messages.
func TestKnownMACs(t *testing.T) {
	secret := []byte(strings.Repeat("k", SecretBytes))
	for _, c := range []struct{ what, got, want string }{
		{"ExitMark", ExitMark(secret, "n"), "c72063766f7f8b3d84aafcf62eb3fff3b2d9fa1fa5f97c9a648857b89338edc8"},
		{"GuestMAC", GuestMAC(secret, "n", "x"), "c04a1f8c602acfa8f856e13635d0eb6420918ea78cf318178be55ea51515d473"},
		{"ServerMAC", ServerMAC(secret, "n", "x"), "0b1ce9bd565f82887895f934333a2118abd87700e64ed80e59015de2e66345c3"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %s, want %s", c.what, c.got, c.want)
		}
	}
}
