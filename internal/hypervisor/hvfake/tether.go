package hvfake

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/vchproject/vch/internal/tether/wire"
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
//
// Any other Args[0] is rejected like tether rejects a missing executable:
// wire.StartError with exit code 127 ("noexec" gives 126, as a file that is
// not executable).
//
// Signals, whatever the program, follow PID 1's rules: 9 (SIGKILL) ends the
// process with 137; 15 (SIGTERM) ends it with 143 only when its Env has
// TRAP_TERM=1; every other signal is ignored. The exit status is sent after
// all output, then the channel closes, as internal/tether/server.go does.
const Programs = "echo printerr exit sleep cat lines"

func hostConfig() *ssh.ServerConfig {
	cfg := &ssh.ServerConfig{NoClientAuth: true}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		panic(err)
	}
	cfg.AddHostKey(signer)
	return cfg
}

// serve is the fake tether: one SSH session on the guest end, after the
// boot gate opens, until power-off or the end of the VM.
func (vm *VM) serve(gate <-chan struct{}) {
	select {
	case <-gate:
	case <-vm.done:
		return
	}
	sc, chans, reqs, err := ssh.NewServerConn(vm.guest, hostConfig())
	if err != nil {
		return // the host hung up or the VM ended
	}
	go func() {
		for nc := range chans {
			go vm.handleChannel(nc)
		}
	}()
	for req := range reqs {
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
			return
		default:
			if req.WantReply {
				_ = req.Reply(false, nil)
			}
		}
	}
	// The host closed the connection: like tether, keep running until the
	// VM is killed.
}

func reject(nc ssh.NewChannel, msg string, code int) {
	_ = nc.Reject(ssh.ConnectionFailed, string(wire.Encode(wire.StartError{Message: msg, ExitCode: code})))
}

func (vm *VM) handleChannel(nc ssh.NewChannel) {
	if nc.ChannelType() != wire.ChannelProcess {
		_ = nc.Reject(ssh.UnknownChannelType, "unknown channel type")
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
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	p := &process{vm: vm, spec: spec, ch: ch, end: make(chan int, 1), stop: make(chan struct{})}
	go p.handleRequests(reqs)
	go func() { p.finish(p.run()) }()
	code := <-p.end
	p.mu.Lock()
	p.exited = true
	close(p.stop)
	p.mu.Unlock()
	_, _ = ch.SendRequest(wire.RequestExitStatus, false, ssh.Marshal(struct{ Status uint32 }{uint32(code)}))
	_ = ch.Close()
}

// process is one running canned program.
type process struct {
	vm   *VM
	spec wire.Process
	ch   ssh.Channel
	end  chan int      // receives the exit status once
	stop chan struct{} // closed when the process has ended

	mu     sync.Mutex // orders output against the exit
	exited bool
}

func (p *process) finish(code int) {
	select {
	case p.end <- code:
	default:
	}
}

func (p *process) handleRequests(reqs <-chan *ssh.Request) {
	for req := range reqs {
		ok, exit := false, 0
		switch req.Type {
		case wire.RequestSignal:
			var sig wire.Signal
			if json.Unmarshal(req.Payload, &sig) == nil {
				ok = true
				p.vm.mu.Lock()
				p.vm.sigs = append(p.vm.sigs, sig.Number)
				p.vm.mu.Unlock()
				switch {
				case sig.Number == 9:
					exit = 137
				case sig.Number == 15 && slices.Contains(p.spec.Env, "TRAP_TERM=1"):
					exit = 143
				}
			}
		case wire.RequestWindowChange:
			ok = true
		}
		// Reply before the process ends, as tether does: kill(2) returns
		// before the process has exited and its channel closed.
		if req.WantReply {
			_ = req.Reply(ok, nil)
		}
		if exit != 0 {
			p.finish(exit)
		}
	}
}

// write sends output unless the process has already ended.
func (p *process) write(stderr bool, b []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return io.ErrClosedPipe
	}
	var w io.Writer = p.ch
	if stderr && !p.spec.Tty {
		w = p.ch.Stderr()
	}
	_, err := w.Write(b)
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
		if !p.spec.Stdin {
			return 0, false
		}
		buf := make([]byte, 32<<10)
		for {
			n, err := p.ch.Read(buf)
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
