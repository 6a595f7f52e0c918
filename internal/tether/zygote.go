package tether

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/vchproject/vch/internal/agent/wire"
)

// A zygote is the spawn helper of a template's main process, started
// before the template is saved: it has set up its Go runtime and its PID
// namespace and waits on a socket for the process to become. A VM
// restored from the template hands it the spawn spec and the process's
// stdio, and so skips forking tether and starting a Go program, which in
// a clone costs ~100–200 ms under TCG (none of that code has been
// translated since the restore). Any failure to use it falls back to a
// fresh helper.

const (
	// zygoteEnv marks a helper that waits for its spec on zygoteFD.
	zygoteEnv = "VCH_SPAWN_ZYGOTE"
	// zygoteFD is the zygote's end of its socket (SOCK_SEQPACKET: one
	// message, the JSON spawnSpec with the process's stdin, stdout,
	// stderr and status pipe as SCM_RIGHTS).
	zygoteFD = 3
	// zygoteMsgBytes bounds that message: the host bounds a process spec
	// to 200 KiB (compute.MaxProcessSpecBytes); the resolved spec adds
	// little.
	zygoteMsgBytes = 1 << 20
)

// zygote is tether's handle on a waiting zygote. Use takes it at most
// once.
type zygote struct {
	mu   sync.Mutex
	pid  int
	sock *os.File // tether's end; nil once used
}

// startZygote starts a zygote in a new PID namespace, as startProcess
// starts a main process's helper.
func startZygote() (*zygote, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("tether: zygote socket: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "zygote"), os.NewFile(uintptr(fds[1]), "zygote-child")
	defer theirs.Close()
	_ = unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, zygoteMsgBytes)
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		ours.Close()
		return nil, fmt.Errorf("tether: zygote: %w", err)
	}
	defer null.Close()
	sys := &syscall.SysProcAttr{Setsid: true, Cloneflags: syscall.CLONE_NEWPID}
	// Born in the container's cgroup (made at boot), so a restored
	// template's main process does not move there on the hot path.
	defer intoCgroup(sys, containerCgroup)()
	attr := &os.ProcAttr{Dir: "/", Env: []string{zygoteEnv + "=1"}, Files: []*os.File{null, null, null, theirs}, Sys: sys}
	p, err := os.StartProcess(selfPath, []string{selfPath, spawnArg}, attr)
	if err != nil {
		ours.Close()
		return nil, fmt.Errorf("tether: zygote: %w", err)
	}
	pid := p.Pid
	_ = p.Release()
	return &zygote{pid: pid, sock: ours}, nil
}

// use hands the zygote its spec and the process's files (stdin, stdout,
// stderr, status pipe, in that order) and returns its PID. false if the
// zygote was used already or cannot take the message (it died): the
// caller starts a helper itself.
func (z *zygote) use(spec spawnSpec, files []*os.File) (int, bool) {
	if z == nil {
		return 0, false
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.sock == nil {
		return 0, false
	}
	sock := z.sock
	z.sock = nil
	defer sock.Close()
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	if err := unix.Sendmsg(int(sock.Fd()), wire.Encode(spec), unix.UnixRights(fds...), nil, 0); err != nil {
		return 0, false
	}
	return z.pid, true
}

// awaitSpec is the zygote's side: it blocks until tether sends the spec,
// installs the files as stdin, stdout, stderr and statusFD, and takes
// the terminal as its controlling one when the process has a TTY.
func awaitSpec() (spawnSpec, error) {
	var spec spawnSpec
	buf := make([]byte, zygoteMsgBytes)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := unix.Recvmsg(zygoteFD, buf, oob, 0)
	if err != nil {
		return spec, fmt.Errorf("tether: zygote: receive: %w", err)
	}
	_ = unix.Close(zygoteFD)
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return spec, fmt.Errorf("tether: zygote: no files received")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 4 {
		return spec, fmt.Errorf("tether: zygote: want 4 files, got %d", len(fds))
	}
	for i, fd := range fds {
		if err := unix.Dup2(fd, i); err != nil {
			return spec, fmt.Errorf("tether: zygote: dup: %w", err)
		}
	}
	for _, fd := range fds {
		if fd > statusFD {
			_ = unix.Close(fd)
		}
	}
	if err := json.Unmarshal(buf[:n], &spec); err != nil {
		return spec, fmt.Errorf("tether: zygote: bad spec: %w", err)
	}
	if spec.Tty {
		if err := unix.IoctlSetInt(0, unix.TIOCSCTTY, 0); err != nil {
			return spec, fmt.Errorf("tether: zygote: controlling terminal: %w", err)
		}
	}
	return spec, nil
}
