// Package dockertest provides a fake port layer for testing the Docker
// personality: an in-memory container and image store that records every
// call, runs a few canned "programs" instead of VMs, and fails on demand.
//
// Programs (Args[0]): "echo" writes its arguments and a newline to stdout;
// "printerr" writes them to stderr; "exit" exits with Args[1]; "cat" copies
// attached stdin to stdout until EOF; "sleep" runs until stopped or killed
// (exit 128+signal). Any other program fails to start with
// `exec: "<name>": executable file not found in $PATH` and exit code 127.
package dockertest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/vchproject/vch/internal/personality/docker/system"
	"github.com/vchproject/vch/internal/portlayer"
)

// Fake implements portlayer.Compute, portlayer.Interaction,
// portlayer.Pauser, portlayer.Images and system.Source. Safe for concurrent use.
type Fake struct {
	mu    sync.Mutex
	calls []string
	fail  map[string]error
	ctrs  map[string]*ctr
	seq   int
	imgs  map[string]*portlayer.Image // by ID
	// Registry holds the images Pull can fetch, by familiar reference
	// ("busybox:latest").
	Registry map[string]portlayer.Image
	// HostInfo is what Host returns.
	HostInfo system.Host
	// VMHost is the host a started container's VM runs on (its
	// State.Host), as a hypervisor that places VMs over several hosts
	// reports it; "" (the default) for VMs on the VCH's own host.
	VMHost string
}

type ctr struct {
	c         portlayer.Container
	logs      []portlayer.LogMessage
	attaches  []*attachment
	followers []chan portlayer.LogMessage
	waiters   []waiter
	stop      chan int // receives a signal for a running "sleep"
	removed   bool
}

type waiter struct {
	cond portlayer.WaitCondition
	ch   chan portlayer.WaitResult
}

type attachment struct {
	opts portlayer.AttachOptions
	done chan struct{}
	once sync.Once
}

func (a *attachment) Done() <-chan struct{} { return a.done }
func (a *attachment) Close() error {
	a.once.Do(func() { close(a.done) })
	return nil
}

// BusyboxID is the ID of the image New stores as "busybox:latest".
var BusyboxID = "sha256:" + strings.Repeat("b", 64)

// New returns a fake holding one image, busybox:latest (CMD ["sh"]).
func New() *Fake {
	f := &Fake{
		fail:     map[string]error{},
		ctrs:     map[string]*ctr{},
		imgs:     map[string]*portlayer.Image{},
		Registry: map[string]portlayer.Image{},
		HostInfo: system.Host{
			Name: "vch-test", Hypervisor: "qemu", Accelerator: "tcg",
			GuestKernelVersion: "6.1.0-test-cloud-amd64", NCPU: 4, MemTotalBytes: 8 << 30, RootDir: "/var/lib/vch/test",
		},
	}
	f.imgs[BusyboxID] = &portlayer.Image{
		ID: BusyboxID, RepoTags: []string{"busybox:latest"},
		Config: ocispec.Image{
			Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"},
			Config:   ocispec.ImageConfig{Cmd: []string{"sh"}, Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
		},
		Layers: []string{"sha256:" + strings.Repeat("1", 64)}, Size: 4 << 20, Created: time.Date(2024, 9, 26, 21, 31, 42, 0, time.UTC),
	}
	return f
}

// FailOn makes every later call of method (e.g. "Start", "Images.Pull")
// return err; nil clears it.
func (f *Fake) FailOn(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.fail, method)
		return
	}
	f.fail[method] = err
}

// Calls returns the calls so far as "Method arg", in order.
func (f *Fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// record notes a call and returns the injected failure, if any. Caller
// holds f.mu.
func (f *Fake) record(method, arg string) error {
	f.calls = append(f.calls, strings.TrimSpace(method+" "+arg))
	return f.fail[method]
}

func notFoundCtr(id string) error {
	return portlayer.NoSuchContainer(id)
}

// lookup resolves an ID, unique ID prefix or name. Caller holds f.mu.
func (f *Fake) lookup(idOrName string) (*ctr, error) {
	if c, ok := f.ctrs[idOrName]; ok {
		return c, nil
	}
	var found *ctr
	for _, c := range f.ctrs {
		if c.c.Spec.Name == strings.TrimPrefix(idOrName, "/") {
			return c, nil
		}
		if strings.HasPrefix(c.c.ID, idOrName) {
			if found != nil {
				return nil, &portlayer.Error{Class: portlayer.ClassInvalidArgument, Kind: portlayer.KindContainer, ID: idOrName, Reason: portlayer.ReasonAmbiguous, Message: "fake: ambiguous prefix " + idOrName}
			}
			found = c
		}
	}
	if found == nil {
		return nil, notFoundCtr(idOrName)
	}
	return found, nil
}

// Create implements portlayer.Compute.
func (f *Fake) Create(_ context.Context, spec portlayer.ContainerSpec) (portlayer.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("Create", spec.Name); err != nil {
		return portlayer.Container{}, err
	}
	if len(spec.Args) == 0 {
		return portlayer.Container{}, fmt.Errorf("fake: no args: %w", errdefs.ErrInvalidArgument)
	}
	if _, ok := f.imgs[spec.Image]; !ok {
		return portlayer.Container{}, fmt.Errorf("fake: image %s: %w", spec.Image, errdefs.ErrNotFound)
	}
	f.seq++
	sum := sha256.Sum256([]byte(strconv.Itoa(f.seq)))
	id := hex.EncodeToString(sum[:])
	if spec.Name == "" {
		spec.Name = "fake_" + id[:6]
	}
	for _, c := range f.ctrs {
		if c.c.Spec.Name == spec.Name {
			return portlayer.Container{}, &portlayer.Error{Class: portlayer.ClassAlreadyExists, Kind: portlayer.KindContainer, ID: c.c.ID, Name: spec.Name, Reason: portlayer.ReasonNameInUse, Message: "fake: name " + spec.Name}
		}
	}
	c := &ctr{c: portlayer.Container{ID: id, Created: time.Now(), Spec: spec, State: portlayer.State{Status: portlayer.StatusCreated}, LogPath: "/fake/" + id + ".log"}}
	f.ctrs[id] = c
	return c.c, nil
}

// Start implements portlayer.Compute: it runs the container's program.
func (f *Fake) Start(_ context.Context, idOrName string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("Start", idOrName); err != nil {
		return err
	}
	c, err := f.lookup(idOrName)
	if err != nil {
		return err
	}
	if c.c.State.Status == portlayer.StatusRunning || c.c.State.Status == portlayer.StatusRestarting {
		// Like compute: left as it is, and said so.
		return portlayer.Unchanged("start", c.c.ID, portlayer.ReasonRunning)
	}
	if c.c.State.Status == portlayer.StatusPaused {
		return portlayer.ContainerState("start", c.c.ID, portlayer.ReasonPaused)
	}
	prog := c.c.Spec.Args[0]
	switch prog {
	case "echo", "printerr", "exit", "cat", "sleep":
	default:
		c.c.State.ExitCode = 127
		c.c.State.Error = fmt.Sprintf("exec: %q: executable file not found in $PATH", prog)
		if c.c.Spec.AutoRemove {
			f.removeLocked(c)
		}
		return portlayer.StartFailed(portlayer.KindContainer, c.c.ID, c.c.State.Error, 127)
	}
	c.c.State = portlayer.State{Status: portlayer.StatusRunning, Pid: 4242, StartedAt: time.Now(), Host: f.VMHost}
	c.stop = make(chan int, 1)
	go f.run(c)
	return nil
}

// run plays a program, then exits the container.
func (f *Fake) run(c *ctr) {
	args := c.c.Spec.Args
	code := 0
	switch args[0] {
	case "echo":
		f.output(c, "stdout", []byte(strings.Join(args[1:], " ")+"\n"))
	case "printerr":
		f.output(c, "stderr", []byte(strings.Join(args[1:], " ")+"\n"))
	case "exit":
		if len(args) > 1 {
			code, _ = strconv.Atoi(args[1])
		}
	case "cat":
		f.mu.Lock()
		var in io.Reader
		for _, a := range c.attaches {
			if a.opts.Stdin != nil {
				in = a.opts.Stdin
			}
		}
		f.mu.Unlock()
		if in != nil {
			br := bufio.NewReader(in)
			for {
				line, err := br.ReadBytes('\n')
				if len(line) > 0 {
					f.output(c, "stdout", line)
				}
				if err != nil {
					break
				}
			}
		}
	case "sleep":
		code = 128 + <-c.stop
	}
	f.exit(c, code)
}

// output logs data and writes it to the attached writers.
func (f *Fake) output(c *ctr, stream string, data []byte) {
	f.mu.Lock()
	msg := portlayer.LogMessage{Stream: stream, Time: time.Now(), Data: append([]byte(nil), data...)}
	c.logs = append(c.logs, msg)
	var ws []io.Writer
	for _, a := range c.attaches {
		w := a.opts.Stdout
		if stream == "stderr" {
			w = a.opts.Stderr
		}
		if w != nil && a.opts.Stream {
			ws = append(ws, w)
		}
	}
	followers := append([]chan portlayer.LogMessage(nil), c.followers...)
	f.mu.Unlock()
	for _, w := range ws {
		_, _ = w.Write(data)
	}
	for _, fl := range followers {
		select {
		case fl <- msg:
		default:
		}
	}
}

// exit records the exit, releases attachments and waiters, and
// auto-removes.
func (f *Fake) exit(c *ctr, code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c.c.State.Status = portlayer.StatusExited
	c.c.State.ExitCode = code
	c.c.State.Pid = 0
	c.c.State.FinishedAt = time.Now()
	for _, a := range c.attaches {
		_ = a.Close()
	}
	c.attaches = nil
	for _, fl := range c.followers {
		close(fl)
	}
	c.followers = nil
	var keep []waiter
	for _, w := range c.waiters {
		if w.cond == portlayer.WaitRemoved {
			keep = append(keep, w)
			continue
		}
		w.ch <- portlayer.WaitResult{ExitCode: code}
	}
	c.waiters = keep
	if c.c.Spec.AutoRemove {
		f.removeLocked(c)
	}
}

func (f *Fake) removeLocked(c *ctr) {
	delete(f.ctrs, c.c.ID)
	c.removed = true
	for _, w := range c.waiters {
		w.ch <- portlayer.WaitResult{ExitCode: c.c.State.ExitCode}
	}
	c.waiters = nil
}

// signal stops a running program with sig. Caller holds f.mu.
func (c *ctr) signal(sig int) {
	select {
	case c.stop <- sig:
	default:
	}
}

// Stop implements portlayer.Compute.
func (f *Fake) Stop(_ context.Context, idOrName string, timeout *time.Duration) error {
	f.mu.Lock()
	if err := f.record("Stop", idOrName); err != nil {
		f.mu.Unlock()
		return err
	}
	c, err := f.lookup(idOrName)
	if err != nil {
		f.mu.Unlock()
		return err
	}
	if c.c.State.Status == portlayer.StatusPaused {
		// Like compute: a paused VM is resumed so the signal lands.
		c.c.State.Status = portlayer.StatusRunning
	}
	if c.c.State.Status != portlayer.StatusRunning {
		f.mu.Unlock()
		return portlayer.Unchanged("stop", c.c.ID, portlayer.ReasonNotRunning)
	}
	sig := c.c.Spec.StopSignal
	if sig == 0 {
		sig = 15
	}
	done := make(chan portlayer.WaitResult, 1)
	c.waiters = append(c.waiters, waiter{cond: portlayer.WaitNextExit, ch: done})
	c.signal(sig)
	f.mu.Unlock()
	<-done
	return nil
}

// Pause implements portlayer.Pauser: a running container becomes paused.
func (f *Fake) Pause(_ context.Context, idOrName string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("Pause", idOrName); err != nil {
		return err
	}
	c, err := f.lookup(idOrName)
	if err != nil {
		return err
	}
	switch c.c.State.Status {
	case portlayer.StatusPaused:
		return portlayer.ContainerState("pause", c.c.ID, portlayer.ReasonPaused)
	case portlayer.StatusRunning:
		c.c.State.Status = portlayer.StatusPaused
		return nil
	}
	return portlayer.ContainerState("pause", c.c.ID, portlayer.ReasonNotRunning)
}

// Unpause implements portlayer.Pauser.
func (f *Fake) Unpause(_ context.Context, idOrName string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("Unpause", idOrName); err != nil {
		return err
	}
	c, err := f.lookup(idOrName)
	if err != nil {
		return err
	}
	if c.c.State.Status != portlayer.StatusPaused {
		return portlayer.ContainerState("unpause", c.c.ID, portlayer.ReasonNotPaused)
	}
	c.c.State.Status = portlayer.StatusRunning
	return nil
}

// Kill implements portlayer.Compute.
func (f *Fake) Kill(_ context.Context, idOrName string, signal int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("Kill", fmt.Sprintf("%s %d", idOrName, signal)); err != nil {
		return err
	}
	c, err := f.lookup(idOrName)
	if err != nil {
		return err
	}
	if c.c.State.Status == portlayer.StatusPaused && signal != 9 {
		return portlayer.ContainerState("kill", c.c.ID, portlayer.ReasonPaused)
	}
	if c.c.State.Status != portlayer.StatusRunning && c.c.State.Status != portlayer.StatusPaused {
		return portlayer.ContainerState("kill", c.c.ID, portlayer.ReasonNotRunning)
	}
	if signal == 0 {
		signal = 9
	}
	c.signal(signal)
	return nil
}

// Wait implements portlayer.Compute.
func (f *Fake) Wait(_ context.Context, idOrName string, cond portlayer.WaitCondition) (<-chan portlayer.WaitResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("Wait", idOrName+" "+string(cond)); err != nil {
		return nil, err
	}
	c, err := f.lookup(idOrName)
	if err != nil {
		return nil, err
	}
	ch := make(chan portlayer.WaitResult, 1)
	if cond == portlayer.WaitNotRunning && c.c.State.Status != portlayer.StatusRunning {
		ch <- portlayer.WaitResult{ExitCode: c.c.State.ExitCode}
		return ch, nil
	}
	c.waiters = append(c.waiters, waiter{cond: cond, ch: ch})
	return ch, nil
}

// Remove implements portlayer.Compute.
func (f *Fake) Remove(_ context.Context, idOrName string, force bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("Remove", idOrName); err != nil {
		return err
	}
	c, err := f.lookup(idOrName)
	if err != nil {
		return err
	}
	if c.c.State.Status == portlayer.StatusPaused && !force {
		return portlayer.ContainerState("remove", c.c.ID, portlayer.ReasonPaused)
	}
	if c.c.State.Status == portlayer.StatusRunning {
		if !force {
			return portlayer.ContainerState("remove", c.c.ID, portlayer.ReasonRunning)
		}
		c.c.Spec.AutoRemove = true
		c.signal(9)
		return nil
	}
	f.removeLocked(c)
	return nil
}

// Inspect implements portlayer.Compute.
func (f *Fake) Inspect(_ context.Context, idOrName string) (portlayer.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("Inspect", idOrName); err != nil {
		return portlayer.Container{}, err
	}
	c, err := f.lookup(idOrName)
	if err != nil {
		return portlayer.Container{}, err
	}
	return c.c, nil
}

// List implements portlayer.Compute: newest first.
func (f *Fake) List(_ context.Context) ([]portlayer.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("List", ""); err != nil {
		return nil, err
	}
	var out []portlayer.Container
	for _, c := range f.ctrs {
		out = append(out, c.c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}

// Rename implements portlayer.Compute.
func (f *Fake) Rename(_ context.Context, idOrName, newName string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("Rename", idOrName+" "+newName); err != nil {
		return err
	}
	c, err := f.lookup(idOrName)
	if err != nil {
		return err
	}
	for _, o := range f.ctrs {
		if o.c.Spec.Name == newName {
			return &portlayer.Error{Class: portlayer.ClassAlreadyExists, Kind: portlayer.KindContainer, ID: o.c.ID, Name: newName, Reason: portlayer.ReasonNameInUse, Message: "fake: name " + newName}
		}
	}
	c.c.Spec.Name = newName
	return nil
}

// Attach implements portlayer.Interaction; logs are replayed at once.
func (f *Fake) Attach(_ context.Context, idOrName string, opts portlayer.AttachOptions) (portlayer.Attachment, error) {
	f.mu.Lock()
	if err := f.record("Attach", idOrName); err != nil {
		f.mu.Unlock()
		return nil, err
	}
	c, err := f.lookup(idOrName)
	if err != nil {
		f.mu.Unlock()
		return nil, err
	}
	a := &attachment{opts: opts, done: make(chan struct{})}
	logs := append([]portlayer.LogMessage(nil), c.logs...)
	if opts.Stream {
		c.attaches = append(c.attaches, a)
	}
	f.mu.Unlock()
	if opts.Logs {
		go func() {
			for _, m := range logs {
				w := opts.Stdout
				if m.Stream == "stderr" {
					w = opts.Stderr
				}
				if w != nil {
					_, _ = w.Write(m.Data)
				}
			}
			if !opts.Stream {
				_ = a.Close()
			}
		}()
	} else if !opts.Stream {
		_ = a.Close()
	}
	return a, nil
}

// Logs implements portlayer.Interaction.
func (f *Fake) Logs(ctx context.Context, idOrName string, opts portlayer.LogOptions) (<-chan portlayer.LogMessage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("Logs", idOrName); err != nil {
		return nil, err
	}
	c, err := f.lookup(idOrName)
	if err != nil {
		return nil, err
	}
	if c.c.Spec.NoLog {
		return nil, &portlayer.Error{Class: portlayer.ClassFailedPrecondition, Kind: portlayer.KindContainer, ID: c.c.ID, Reason: portlayer.ReasonNoLog, Message: "keeps no log"}
	}
	var sel []portlayer.LogMessage
	for _, m := range c.logs {
		if m.Stream == "stdout" && !opts.Stdout || m.Stream == "stderr" && !opts.Stderr {
			continue
		}
		if !opts.Since.IsZero() && m.Time.Before(opts.Since) || !opts.Until.IsZero() && m.Time.After(opts.Until) {
			continue
		}
		sel = append(sel, m)
	}
	if opts.Tail >= 0 && len(sel) > opts.Tail {
		sel = sel[len(sel)-opts.Tail:]
	}
	out := make(chan portlayer.LogMessage, len(sel))
	for _, m := range sel {
		out <- m
	}
	if !opts.Follow || c.c.State.Status != portlayer.StatusRunning {
		close(out)
		return out, nil
	}
	in := make(chan portlayer.LogMessage, 16)
	c.followers = append(c.followers, in)
	go func() {
		defer close(out)
		for {
			select {
			case m, ok := <-in:
				if !ok {
					return
				}
				out <- m
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// Images part. The fake's store keys images by ID; tags are familiar refs.

func familiar(ref string) string {
	n, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return ref
	}
	return reference.FamiliarString(reference.TagNameOnly(n))
}

// getLocked resolves a reference, ID or ID prefix. Caller holds f.mu.
func (f *Fake) getLocked(ref string) (*portlayer.Image, error) {
	if img, ok := f.imgs[ref]; ok {
		return img, nil
	}
	fam := familiar(ref)
	for _, img := range f.imgs {
		for _, t := range img.RepoTags {
			if t == fam {
				return img, nil
			}
		}
	}
	hexRef := strings.TrimPrefix(ref, "sha256:")
	if len(hexRef) >= 4 {
		for id, img := range f.imgs {
			if strings.HasPrefix(strings.TrimPrefix(id, "sha256:"), hexRef) {
				return img, nil
			}
		}
	}
	return nil, portlayer.NoSuchImage(ref)
}

// untagLocked removes tag from every image. Caller holds f.mu.
func (f *Fake) untagLocked(tag string) {
	for _, img := range f.imgs {
		for i, t := range img.RepoTags {
			if t == tag {
				img.RepoTags = append(img.RepoTags[:i:i], img.RepoTags[i+1:]...)
				break
			}
		}
	}
}

func (f *Fake) store(img portlayer.Image) portlayer.Image {
	for _, t := range img.RepoTags {
		f.untagLocked(t)
	}
	if old, ok := f.imgs[img.ID]; ok {
		old.RepoTags = append(old.RepoTags, img.RepoTags...)
		sort.Strings(old.RepoTags)
		return *old
	}
	cp := img
	f.imgs[img.ID] = &cp
	return cp
}

// ImagesAPI adapts the fake to portlayer.Images (whose List and Remove
// clash with portlayer.Compute's).
type ImagesAPI struct{ f *Fake }

// Images returns the portlayer.Images view of the fake.
func (f *Fake) Images() ImagesAPI { return ImagesAPI{f} }

// Pull implements portlayer.Images from f.Registry. It records "ref user"
// (the user name of auth; empty when anonymous).
func (a ImagesAPI) Pull(ctx context.Context, ref string, auth portlayer.RegistryAuth, progress portlayer.ProgressFunc) (portlayer.Image, error) {
	f := a.f
	f.mu.Lock()
	err := f.record("Images.Pull", ref+" "+auth.Username)
	img, ok := f.Registry[familiar(ref)]
	f.mu.Unlock()
	if err != nil {
		return portlayer.Image{}, err
	}
	if !ok {
		return portlayer.Image{}, fmt.Errorf("manifest for %s not found: manifest unknown: %w", familiar(ref), errdefs.ErrNotFound)
	}
	for _, l := range img.Layers {
		short := strings.TrimPrefix(l, "sha256:")[:12]
		progress(portlayer.Progress{ID: short, Status: "Pulling fs layer"})
		progress(portlayer.Progress{ID: short, Status: "Downloading", Current: 512, Total: 1024})
		progress(portlayer.Progress{ID: short, Status: "Pull complete"})
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail["Images.Pull.after"]; err != nil {
		return portlayer.Image{}, err
	}
	// Like the real store, finish with the digest and the status line.
	progress(portlayer.Progress{Status: "Digest: sha256:" + strings.Repeat("d", 64)})
	progress(portlayer.Progress{Status: "Status: Downloaded newer image for " + familiar(ref)})
	img.RepoTags = []string{familiar(ref)}
	return f.store(img), nil
}

// Import implements portlayer.Images: the ID is the digest of the body.
func (a ImagesAPI) Import(ctx context.Context, r io.Reader, ref string, opts portlayer.ImportOptions, progress portlayer.ProgressFunc) (portlayer.Image, error) {
	f := a.f
	data, rerr := io.ReadAll(r)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("Images.Import", ref); err != nil {
		return portlayer.Image{}, err
	}
	if rerr != nil {
		return portlayer.Image{}, rerr
	}
	sum := sha256.Sum256(data)
	plat := opts.Platform
	if plat.OS == "" {
		plat = ocispec.Platform{Architecture: "amd64", OS: "linux"}
	}
	img := portlayer.Image{ID: "sha256:" + hex.EncodeToString(sum[:]), Config: ocispec.Image{Platform: plat, Config: opts.Config}, Size: int64(len(data)), Created: time.Now()}
	if ref != "" {
		img.RepoTags = []string{familiar(ref)}
	}
	progress(portlayer.Progress{Status: "Importing", Current: int64(len(data)), Total: int64(len(data))})
	return f.store(img), nil
}

// Load implements portlayer.Images. The fake archive format is one tag per
// line; each tag becomes an image whose ID is the digest of the tag.
func (a ImagesAPI) Load(ctx context.Context, r io.Reader, progress portlayer.ProgressFunc) ([]portlayer.Image, error) {
	f := a.f
	data, rerr := io.ReadAll(r)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("Images.Load", ""); err != nil {
		return nil, err
	}
	if rerr != nil {
		return nil, rerr
	}
	var out []portlayer.Image
	for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		tag := string(bytes.TrimSpace(line))
		if tag == "" {
			continue
		}
		if _, err := reference.ParseNormalizedNamed(tag); err != nil {
			return nil, fmt.Errorf("fake: bad archive: %w", errdefs.ErrInvalidArgument)
		}
		sum := sha256.Sum256([]byte(tag))
		progress(portlayer.Progress{ID: tag, Status: "Loading layer", Current: 1, Total: 1})
		img := portlayer.Image{ID: "sha256:" + hex.EncodeToString(sum[:]), RepoTags: []string{familiar(tag)},
			Config: ocispec.Image{Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"}, Config: ocispec.ImageConfig{Cmd: []string{"sh"}}}, Created: time.Now()}
		out = append(out, f.store(img))
	}
	return out, nil
}

// Get implements portlayer.Images.
func (a ImagesAPI) Get(ctx context.Context, ref string) (portlayer.Image, error) {
	f := a.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("Images.Get", ref); err != nil {
		return portlayer.Image{}, err
	}
	img, err := f.getLocked(ref)
	if err != nil {
		return portlayer.Image{}, err
	}
	return *img, nil
}

// List implements portlayer.Images: newest first.
func (a ImagesAPI) List(ctx context.Context) ([]portlayer.Image, error) {
	f := a.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("Images.List", ""); err != nil {
		return nil, err
	}
	var out []portlayer.Image
	for _, img := range f.imgs {
		out = append(out, *img)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}

// Tag implements portlayer.Images.
func (a ImagesAPI) Tag(ctx context.Context, src, target string) error {
	f := a.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("Images.Tag", src+" "+target); err != nil {
		return err
	}
	img, err := f.getLocked(src)
	if err != nil {
		return err
	}
	t := familiar(target)
	f.untagLocked(t)
	img.RepoTags = append(img.RepoTags, t)
	sort.Strings(img.RepoTags)
	return nil
}

// Remove implements portlayer.Images.
func (a ImagesAPI) Remove(ctx context.Context, ref string, force bool) ([]portlayer.ImageDelete, error) {
	f := a.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("Images.Remove", ref); err != nil {
		return nil, err
	}
	img, err := f.getLocked(ref)
	if err != nil {
		return nil, err
	}
	if !force {
		for _, c := range f.ctrs {
			if c.c.Spec.Image == img.ID {
				return nil, portlayer.ImageConflict("remove", strings.TrimPrefix(img.ID, "sha256:")[:12], ref, portlayer.ReasonInUse, c.c.ID[:12])
			}
		}
	}
	var out []portlayer.ImageDelete
	fam := familiar(ref)
	isTag := false
	for _, t := range img.RepoTags {
		isTag = isTag || t == fam
	}
	if isTag && !force {
		f.untagLocked(fam)
		out = append(out, portlayer.ImageDelete{Untagged: fam})
	} else {
		for _, t := range img.RepoTags {
			out = append(out, portlayer.ImageDelete{Untagged: t})
		}
		img.RepoTags = nil
	}
	if len(img.RepoTags) == 0 {
		delete(f.imgs, img.ID)
		out = append(out, portlayer.ImageDelete{Deleted: img.ID})
	}
	return out, nil
}

// Save implements portlayer.Images in the fake's archive format (one tag
// per line, which the fake's Load reads back).
func (a ImagesAPI) Save(ctx context.Context, refs []string, w io.Writer) error {
	f := a.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("Images.Save", strings.Join(refs, " ")); err != nil {
		return err
	}
	var lines []string
	for _, ref := range refs {
		img, err := f.getLocked(ref)
		if err != nil {
			return err
		}
		lines = append(lines, img.RepoTags...)
	}
	_, err := io.WriteString(w, strings.Join(lines, "\n")+"\n")
	return err
}

// Push implements portlayer.Images: it records "ref user" and reports one
// layer pushed per image layer.
func (a ImagesAPI) Push(ctx context.Context, ref string, auth portlayer.RegistryAuth, progress portlayer.ProgressFunc) ([]portlayer.PushResult, error) {
	f := a.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("Images.Push", ref+" "+auth.Username); err != nil {
		return nil, err
	}
	img, err := f.getLocked(ref)
	if err != nil {
		return nil, fmt.Errorf("An image does not exist locally with the tag: %s: %w", ref, errdefs.ErrNotFound)
	}
	progress(portlayer.Progress{Status: "The push refers to repository [" + ref + "]"})
	for _, l := range img.Layers {
		progress(portlayer.Progress{ID: strings.TrimPrefix(l, "sha256:")[:12], Status: "Pushed"})
	}
	return []portlayer.PushResult{{Tag: "latest", Digest: "sha256:" + strings.Repeat("e", 64), Size: 527}}, nil
}

// Host implements system.Source.
func (f *Fake) Host(context.Context) (system.Host, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("Host", ""); err != nil {
		return system.Host{}, err
	}
	return f.HostInfo, nil
}

var (
	_ portlayer.Compute     = (*Fake)(nil)
	_ portlayer.Interaction = (*Fake)(nil)
	_ portlayer.Images      = ImagesAPI{}
	_ system.Source         = (*Fake)(nil)
)
