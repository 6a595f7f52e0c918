package hvfake

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vchproject/vch/internal/agent/link"
	"github.com/vchproject/vch/internal/agent/wire"
	"github.com/vchproject/vch/internal/tether/proctable"
)

// Programs are the canned programs the fake tether runs in place of
// executables, selected by a process's Args. Args may hold several commands
// separated by ";" arguments, run in order; the exit status is the last
// command's (an exit command ends the sequence).
//
//	echo [-n] ARGS...     ARGS joined by spaces to stdout, then "\n" unless -n
//	printerr [-n] ARGS... the same to stderr (stdout with a TTY)
//	exit N                end with exit status N
//	sleep [DURATION]      wait DURATION (a Go duration), forever without one
//	cat                   copy stdin to stdout until EOF (at once without Stdin)
//	lines N               write "line 1\n" … "line N\n" to stdout
//	ticks [INTERVAL]      write "0\n", "1\n", … to stdout every INTERVAL (1 s)
//	                      until it ends
//
// Any other Args[0] is rejected like tether rejects a missing executable:
// wire.StartError with exit code 127 ("noexec" gives 126, as a file that is
// not executable).
//
// Signals, whatever the program, follow PID 1's rules: 9 (SIGKILL) ends the
// process with 137; 15 (SIGTERM) ends it with 143 only when its Env has
// TRAP_TERM=1; every other signal is ignored. The exit status is sent after
// all output, then the channel closes, as internal/tether/server.go does.
//
// Processes outlive the host's session as tether's do (package proctable,
// shared with tether): their output waits in spools (a program blocks on
// a full one, as on a full pipe), and a host that connects again
// (Driver.Adopt) lists them and attaches to them by ID.
const Programs = "echo printerr exit sleep cat lines ticks"

// serve is the fake tether: sessions (wire protocol v3) one after another on the guest
// ends the VM is given (the first after the boot gate opens), as tether
// serves its port, until power-off or the end of the VM. Processes live in
// the VM's proctable, so they outlive a session as tether's do.
func (vm *VM) serve(gate <-chan struct{}) {
	select {
	case <-gate:
	case <-vm.done:
		return
	}
	for {
		var conn net.Conn
		select {
		case conn = <-vm.sessions:
		case <-vm.done:
			return
		}
		if vm.session(conn) {
			return
		}
	}
}

// deadConn is a session's guest end: it remembers a failed read (the host
// hung up), which tells proctable an EOF is not the host's stdin EOF.
type deadConn struct {
	net.Conn
	dead atomic.Bool
}

func (c *deadConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil {
		c.dead.Store(true)
	}
	return n, err
}

// session serves one connection; true after a power-off.
func (vm *VM) session(conn net.Conn) bool {
	dc := &deadConn{Conn: conn}
	if err := wire.AcceptHello(dc); err != nil {
		conn.Close()
		return false // the host hung up or the VM ended
	}
	sc, chans, reqs, err := link.Server(dc, link.V4)
	if err != nil {
		conn.Close()
		return false
	}
	go func() {
		for nc := range chans {
			go vm.handleChannel(nc, dc.dead.Load)
		}
	}()
	for req := range reqs {
		if vm.table.HandleRequest(req) {
			continue
		}
		switch req.Type {
		case wire.RequestSetup:
			var s wire.Setup
			if err := json.Unmarshal(req.Payload, &s); err != nil {
				_ = req.Reply(false, []byte("hvfake: bad setup: "+err.Error()))
				continue
			}
			vm.mu.Lock()
			vm.setup = &s
			vm.mu.Unlock()
			_ = req.Reply(true, nil)
		case wire.RequestInterface:
			// Recorded and accepted, as tether does for a NIC it has
			// (connect and disconnect on a running container).
			var f wire.Interface
			if err := json.Unmarshal(req.Payload, &f); err != nil {
				_ = req.Reply(false, []byte("hvfake: bad interface: "+err.Error()))
				continue
			}
			vm.mu.Lock()
			vm.ifaces = append(vm.ifaces, f)
			vm.mu.Unlock()
			_ = req.Reply(true, nil)
		case wire.RequestPowerOff:
			_ = req.Reply(true, nil)
			_ = sc.Close()
			vm.end(nil)
			return true
		default:
			_ = req.Reply(false, nil)
		}
	}
	// The host closed the connection: like tether, keep running (and the
	// processes with it) until the VM is killed or a host connects again.
	conn.Close()
	return false
}

func reject(nc link.NewChannel, msg string, code int) {
	_ = nc.Reject(link.ConnectionFailed, string(wire.Encode(wire.StartError{Message: msg, ExitCode: code})))
}

func (vm *VM) handleChannel(nc link.NewChannel, dead func() bool) {
	switch nc.ChannelType() {
	case wire.ChannelProcess:
	case wire.ChannelAttach:
		vm.table.ServeAttach(nc, dead)
		return
	default:
		_ = nc.Reject(link.UnknownChannelType, "unknown channel type")
		return
	}
	var spec wire.Process
	if err := json.Unmarshal(nc.ExtraData(), &spec); err != nil {
		reject(nc, "bad process spec: "+err.Error(), 126)
		return
	}
	vm.mu.Lock()
	vm.procs = append(vm.procs, spec)
	vm.mu.Unlock()
	if len(spec.Args) == 0 {
		reject(nc, "bad process spec: no args", 126)
		return
	}
	switch name := spec.Args[0]; {
	case name == "noexec":
		reject(nc, fmt.Sprintf("exec: %q: permission denied", name), 126)
		return
	case !slices.Contains(strings.Fields(Programs), name):
		reject(nc, fmt.Sprintf("exec: %q: executable file not found in $PATH", name), 127)
		return
	}
	entry, err := vm.table.Reserve(spec)
	if err != nil {
		reject(nc, err.Error(), 126)
		return
	}
	p := &process{vm: vm, spec: entry.Spec(), entry: entry, end: make(chan int, 1), stop: make(chan struct{})}
	var stdin io.WriteCloser
	if spec.Stdin {
		p.stdin, stdin = io.Pipe()
	}
	vm.mu.Lock()
	vm.pidSeq++
	pid := vm.pidSeq
	vm.mu.Unlock()
	entry.Started(pid, stdin, p)
	go func() { p.finish(p.run()) }()
	go func() {
		code := <-p.end
		p.mu.Lock()
		p.exited = true
		close(p.stop)
		p.mu.Unlock()
		if p.stdin != nil {
			p.stdin.Close()
		}
		entry.Exited(code)
	}()
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	entry.Serve(ch, reqs, wire.Attach{ID: entry.ID()}, dead)
}

// process is one running canned program.
type process struct {
	vm    *VM
	spec  wire.Process
	entry *proctable.Process
	stdin *io.PipeReader // nil without stdin
	end   chan int       // receives the exit status once
	stop  chan struct{}  // closed when the process has ended

	mu     sync.Mutex // orders output against the exit
	exited bool
}

func (p *process) finish(code int) {
	select {
	case p.end <- code:
	default:
	}
}

// Signal implements proctable.Controls with PID 1's rules (see Programs).
// It returns before the process has ended, as kill(2) does.
func (p *process) Signal(n int) error {
	p.vm.mu.Lock()
	p.vm.sigs = append(p.vm.sigs, n)
	p.vm.mu.Unlock()
	switch {
	case n == 9:
		p.finish(137)
	case n == 15 && slices.Contains(p.spec.Env, "TRAP_TERM=1"):
		p.finish(143)
	}
	return nil
}

// Resize implements proctable.Controls; the fake has no terminal.
func (p *process) Resize(rows, cols uint32) {}

// write sends output unless the process has already ended.
func (p *process) write(stderr bool, b []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return io.ErrClosedPipe
	}
	sp := p.entry.Stdout
	if stderr && !p.spec.Tty {
		sp = p.entry.Stderr
	}
	// A full spool (the host away) blocks the program, as a pipe blocks a
	// process; a kill still ends it.
	done := make(chan error, 1)
	go func() { _, err := sp.Write(b); done <- err }()
	p.mu.Unlock()
	var err error
	select {
	case err = <-done:
	case <-p.stop:
		err = io.ErrClosedPipe
	}
	p.mu.Lock()
	return err
}

// run runs the command sequence and returns its exit status.
func (p *process) run() int {
	code := 0
	for cmd := range splitCommands(p.spec.Args) {
		var stop bool
		code, stop = p.command(cmd)
		if stop {
			break
		}
	}
	return code
}

func splitCommands(args []string) func(func([]string) bool) {
	return func(yield func([]string) bool) {
		start := 0
		for i := 0; i <= len(args); i++ {
			if i == len(args) || args[i] == ";" {
				if i > start && !yield(args[start:i]) {
					return
				}
				start = i + 1
			}
		}
	}
}

// command runs one command: its status, and whether the sequence ends.
func (p *process) command(args []string) (int, bool) {
	switch args[0] {
	case "echo", "printerr":
		rest, nl := args[1:], "\n"
		if len(rest) > 0 && rest[0] == "-n" {
			rest, nl = rest[1:], ""
		}
		if p.write(args[0] == "printerr", []byte(strings.Join(rest, " ")+nl)) != nil {
			return 1, true
		}
		return 0, false
	case "exit":
		n := 0
		if len(args) > 1 {
			n, _ = strconv.Atoi(args[1])
		}
		return n, true
	case "sleep":
		var timer <-chan time.Time
		if len(args) > 1 {
			d, err := time.ParseDuration(args[1])
			if err != nil {
				_ = p.write(true, []byte("sleep: invalid duration\n"))
				return 1, true
			}
			timer = time.After(d)
		}
		select {
		case <-timer:
			return 0, false
		case <-p.stop:
			return 0, true
		case <-p.vm.done:
			return 0, true
		}
	case "cat":
		if p.stdin == nil {
			return 0, false
		}
		buf := make([]byte, 32<<10)
		for {
			n, err := p.stdin.Read(buf)
			if n > 0 && p.write(false, buf[:n]) != nil {
				return 1, true
			}
			if err == io.EOF {
				return 0, false
			}
			if err != nil {
				return 1, true
			}
		}
	case "ticks":
		interval := time.Second
		if len(args) > 1 {
			d, err := time.ParseDuration(args[1])
			if err != nil {
				_ = p.write(true, []byte("ticks: invalid duration\n"))
				return 1, true
			}
			interval = d
		}
		for i := 0; ; i++ {
			if p.write(false, []byte(strconv.Itoa(i)+"\n")) != nil {
				return 0, true
			}
			select {
			case <-time.After(interval):
			case <-p.stop:
				return 0, true
			case <-p.vm.done:
				return 0, true
			}
		}
	case "lines":
		n := 0
		if len(args) > 1 {
			n, _ = strconv.Atoi(args[1])
		}
		for i := 1; i <= n; i++ {
			if p.write(false, []byte("line "+strconv.Itoa(i)+"\n")) != nil {
				return 1, true
			}
		}
		return 0, false
	default:
		_ = p.write(true, []byte(fmt.Sprintf("%s: not found\n", args[0])))
		return 127, true
	}
}
