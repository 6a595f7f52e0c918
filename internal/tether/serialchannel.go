package tether

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/agent/serialauth"
)

// Kernel command-line words that choose how tether reaches the host.
// Without ChannelParam the channel is the virtio-serial port named
// wire.PortName (the qemu driver's VMs).
const (
	// ChannelParam "vch.channel=serial" makes the channel a serial port
	// backed by a network URI (the vSphere driver's VMs): tether opens
	// SerialDeviceParam's device (default ttyS0) raw, reads the VM's name
	// and secret from guestinfo and runs package serialauth's hello
	// before the agent protocol.
	ChannelParam = "vch.channel"
	// SerialDeviceParam names the serial device under /dev ("ttyS0").
	SerialDeviceParam = "vch.channel.device"
	// GuestinfoParam carries guestinfo on the command line where the
	// VMware backdoor is not there: base64url (unpadded) of a JSON object
	// of guestinfo keys to values. A stand-in: on vSphere, guestinfo is
	// read through the backdoor (guestinfo.go).
	GuestinfoParam = "vch.guestinfo"
)

// Guestinfo keys tether reads on a serial channel (set by the vSphere
// driver).
const (
	guestinfoName   = "guestinfo.vch.name"
	guestinfoSecret = "guestinfo.vch.channel.secret"
	// guestinfoTLS "1": TLS after each hello (serialauth.GuestHandshake).
	guestinfoTLS = "guestinfo.vch.channel.tls"
)

// channelChoice is how this guest reaches the host.
type channelChoice struct {
	serial    bool
	device    string            // under /dev, serial only
	guestinfo map[string]string // from GuestinfoParam or store, serial only
	store     guestinfoStore    // the backdoor's guestinfo, on vSphere; else nil
}

// parseChannel reads the channel's words from a kernel command line.
func parseChannel(cmdline string) (channelChoice, error) {
	var c channelChoice
	for _, w := range strings.Fields(cmdline) {
		k, v, _ := strings.Cut(w, "=")
		switch k {
		case ChannelParam:
			switch v {
			case "serial":
				c.serial = true
			case "virtio":
			default:
				return c, fmt.Errorf("tether: %s=%q: want serial or virtio", ChannelParam, v)
			}
		case SerialDeviceParam:
			if v == "" || strings.ContainsAny(v, "/.") {
				return c, fmt.Errorf("tether: %s=%q: want a device name under /dev", SerialDeviceParam, v)
			}
			c.device = v
		case GuestinfoParam:
			b, err := base64.RawURLEncoding.DecodeString(v)
			if err == nil {
				err = json.Unmarshal(b, &c.guestinfo)
			}
			if err != nil {
				return c, fmt.Errorf("tether: %s: want base64url of a JSON object: %w", GuestinfoParam, err)
			}
		}
	}
	if c.serial && c.device == "" {
		c.device = "ttyS0"
	}
	return c, nil
}

// EncodeGuestinfo is GuestinfoParam's value for keys (see there).
func EncodeGuestinfo(keys map[string]string) string {
	b, _ := json.Marshal(keys)
	return base64.RawURLEncoding.EncodeToString(b)
}

// openSerialChannel opens c's serial device raw (8 bits, no echo, no
// line editing, no flow control, no translation) and runs the guest's
// hello on it. Errors say which step failed; a refused hello wraps
// serialauth.ErrRefused.
func openSerialChannel(c channelChoice) (*os.File, error) {
	if _, _, err := c.identity(); err != nil {
		return nil, err
	}
	dev := "/dev/" + c.device
	f, err := os.OpenFile(dev, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("tether: open serial channel %s: %w", dev, err)
	}
	if err := makeRaw(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("tether: serial channel %s: %w", dev, err)
	}
	if err := c.hello(f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// identity is the VM's name and channel secret from guestinfo.
func (c channelChoice) identity() (string, []byte, error) {
	name, secretHex := c.guestinfo[guestinfoName], c.guestinfo[guestinfoSecret]
	if name == "" || secretHex == "" {
		return "", nil, errNoGuestinfo
	}
	secret, err := serialauth.ParseSecret(secretHex)
	if err != nil {
		return "", nil, err
	}
	return name, secret, nil
}

// hello runs the guest's hello (package serialauth) on the serial
// channel f: at boot, and again whenever a host's session ends, as the
// next host to connect (a restarted daemon, its listener reached by the
// VM's serial port anew) starts with the listener's hello.
func (c channelChoice) hello(f *os.File) error {
	name, secret, err := c.identity()
	if err != nil {
		return err
	}
	if err := serialauth.Guest(f, name, secret); err != nil {
		return fmt.Errorf("tether: serial channel /dev/%s: %w", c.device, err)
	}
	return nil
}

// channelTLS is the guest's TLS handshake for each session on c's
// serial channel, or nil where guestinfo asks for none (a plain channel,
// as the driver made VMs before it set guestinfoTLS).
func (c channelChoice) channelTLS() func(net.Conn) (net.Conn, error) {
	if !c.serial || c.guestinfo[guestinfoTLS] != "1" {
		return nil
	}
	return func(conn net.Conn) (net.Conn, error) {
		name, secret, err := c.identity()
		if err != nil {
			return nil, err
		}
		return serialauth.GuestHandshake(conn, name, secret)
	}
}

// makeRaw puts the terminal f in raw mode at 115200 baud (the 16550's
// fastest with its usual clock; a VMM's UART is not slowed by it).
func makeRaw(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		t, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
		if err != nil {
			serr = err
			return
		}
		t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF | unix.IXANY
		t.Oflag &^= unix.OPOST
		t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		t.Cflag &^= unix.CSIZE | unix.PARENB | unix.CRTSCTS | unix.CBAUD
		t.Cflag |= unix.CS8 | unix.CREAD | unix.CLOCAL | unix.B115200
		t.Ispeed, t.Ospeed = unix.B115200, unix.B115200
		t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
		if err := unix.IoctlSetTermios(int(fd), unix.TCSETS, t); err != nil {
			serr = err
		}
	})
	if err != nil {
		return err
	}
	return serr
}
