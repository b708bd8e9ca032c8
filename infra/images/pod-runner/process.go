package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// reaper waits for every child, orphans included: the runner is PID 1 of the container (or, when it is
// not, a child subreaper), so whatever the template leaves behind ends up as its child.
type reaper struct {
	mu      sync.Mutex
	mainPid int
	exited  chan syscall.WaitStatus
}

func startReaper() *reaper {
	r := &reaper{exited: make(chan syscall.WaitStatus, 1)}
	if os.Getpid() != 1 {
		// PR_SET_CHILD_SUBREAPER: orphans of the template are reparented to the runner, not to init.
		_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, 36, 1, 0)
	}
	children := make(chan os.Signal, 1)
	signal.Notify(children, syscall.SIGCHLD)
	go func() {
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if err == syscall.EINTR {
				continue
			}
			if pid > 0 {
				r.mu.Lock()
				if pid == r.mainPid {
					r.exited <- ws
				}
				r.mu.Unlock()
				continue
			}
			select { // nothing to reap now (or no child at all): wait for the next SIGCHLD
			case <-children:
			case <-time.After(time.Second):
			}
		}
	}()
	return r
}

// startError is a template that could not be started, with the exit code a shell would give.
type startError struct {
	code int
	msg  string
}

func (e *startError) Error() string { return e.msg }

// start runs argv in its own process group with stdin from /dev/null and the given stdout and stderr.
func (r *reaper) start(argv, env []string, stdout, stderr *os.File) (int, error) {
	file, err := lookPath(argv[0], env)
	if err != nil {
		return 0, err
	}
	stdin, err := os.Open(os.DevNull)
	if err != nil {
		return 0, fmt.Errorf("opening %s: %w", os.DevNull, err)
	}
	defer stdin.Close()
	attr := &syscall.ProcAttr{
		Env:   env,
		Files: []uintptr{stdin.Fd(), stdout.Fd(), stderr.Fd()},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	}
	// Held while starting, so the reaper cannot miss the main process if it ends at once.
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := syscall.ForkExec(file, argv, attr)
	if err != nil {
		code := 126
		if errors.Is(err, syscall.ENOENT) {
			code = 127
		}
		return 0, &startError{code, fmt.Sprintf("%s: %v", argv[0], err)}
	}
	r.mainPid = pid
	return pid, nil
}

// lookPath finds a command like a shell does, in the PATH the template gets.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	pathVar := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathVar = v
		}
	}
	denied := false
	for _, dir := range filepath.SplitList(pathVar) {
		file := filepath.Join(cmp(dir, "."), name)
		info, err := os.Stat(file)
		if err != nil || info.IsDir() {
			continue
		}
		if info.Mode()&0o111 != 0 {
			return file, nil
		}
		denied = true
	}
	if denied {
		return "", &startError{126, name + ": permission denied"}
	}
	return "", &startError{127, name + ": command not found"}
}

// killGroup signals the template's whole process group.
func killGroup(pgid int, sig syscall.Signal) {
	_ = syscall.Kill(-pgid, sig)
}

// killLeftovers ends every process the template left, in or out of its group, as the end of a Docker
// container does: everything else in the container when the runner is PID 1, otherwise every descendant
// (the runner is their subreaper, so they are its children once their parents are gone).
func killLeftovers() {
	if os.Getpid() == 1 {
		_ = syscall.Kill(-1, syscall.SIGKILL)
		return
	}
	for round := 0; round < 50; round++ {
		children := childPids()
		if len(children) == 0 {
			return
		}
		for _, pid := range children {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// childPids lists the runner's living children from /proc.
func childPids() []int {
	self := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses, so parse after the last ')'.
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) < 2 || fields[0] == "Z" {
			continue
		}
		if ppid, _ := strconv.Atoi(fields[1]); ppid == self {
			pids = append(pids, pid)
		}
	}
	return pids
}

var signalNames = map[syscall.Signal]string{
	syscall.SIGHUP: "SIGHUP", syscall.SIGINT: "SIGINT", syscall.SIGQUIT: "SIGQUIT", syscall.SIGILL: "SIGILL",
	syscall.SIGTRAP: "SIGTRAP", syscall.SIGABRT: "SIGABRT", syscall.SIGBUS: "SIGBUS", syscall.SIGFPE: "SIGFPE",
	syscall.SIGKILL: "SIGKILL", syscall.SIGUSR1: "SIGUSR1", syscall.SIGSEGV: "SIGSEGV", syscall.SIGUSR2: "SIGUSR2",
	syscall.SIGPIPE: "SIGPIPE", syscall.SIGALRM: "SIGALRM", syscall.SIGTERM: "SIGTERM", syscall.SIGSTKFLT: "SIGSTKFLT",
	syscall.SIGCHLD: "SIGCHLD", syscall.SIGCONT: "SIGCONT", syscall.SIGSTOP: "SIGSTOP", syscall.SIGTSTP: "SIGTSTP",
	syscall.SIGTTIN: "SIGTTIN", syscall.SIGTTOU: "SIGTTOU", syscall.SIGURG: "SIGURG", syscall.SIGXCPU: "SIGXCPU",
	syscall.SIGXFSZ: "SIGXFSZ", syscall.SIGVTALRM: "SIGVTALRM", syscall.SIGPROF: "SIGPROF", syscall.SIGWINCH: "SIGWINCH",
	syscall.SIGIO: "SIGIO", syscall.SIGPWR: "SIGPWR", syscall.SIGSYS: "SIGSYS",
}

func signalName(sig syscall.Signal) string {
	if name, ok := signalNames[sig]; ok {
		return name
	}
	return fmt.Sprintf("SIG%d", int(sig))
}
