// Command pod-runner wraps a template's entrypoint in every run's container, a Kubernetes Job's pod or a
// Docker container on a node (docs/template-contract.md): it restores /state from the agent API, runs the template as
// PID 1 would (reaping, signals to its process group), stores its masked, capped log as it is produced,
// then archives /state and reports the result. See README.md for the protocol.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"
)

const (
	exitInfra         = 125
	parametersFile    = "template-parameters.json"
	secretsFile       = "template-secrets.json"
	terminationLog    = "/dev/termination-log"
	maxWarnings       = 100
	maxWarningBytes   = 4000
	pipeDrainAfterEnd = 10 * time.Second
)

// How long the runner keeps trying the agent; variables so the tests can shorten them.
var (
	restoreRetryFor = 60 * time.Second
	logAckWait      = 120 * time.Second
	archiveRetryFor = 5 * time.Minute
	reportRetryFor  = 5 * time.Minute
	logFilesEvery   = time.Second
)

func say(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[pod-runner] "+format+"\n", args...)
}

// fatal reports a failure of the runner itself: one line on stderr, and the pod's termination message.
func fatal(format string, args ...any) int {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintf(os.Stderr, "pod-runner: %s\n", msg)
	if f, err := os.OpenFile(terminationLog, os.O_WRONLY|os.O_TRUNC, 0); err == nil {
		_, _ = f.WriteString("pod-runner: " + msg + "\n")
		f.Close()
	}
	return exitInfra
}

const usage = `usage:
  pod-runner install <dest>      copy this binary to dest (mode 0755)
  pod-runner run -- <argv...>    run a template (configured by GG_* variables; see README.md)
  pod-runner pack <dir>          write <dir> to stdout as a run archives /state (tar + gzip)
  pod-runner unpack <dir>        restore the archive on stdin into the empty folder <dir>, as a run restores /state`

func main() {
	switch {
	case len(os.Args) == 3 && os.Args[1] == "install":
		if err := install(os.Args[2]); err != nil {
			os.Exit(fatal("install: %v", err))
		}
	case len(os.Args) >= 4 && os.Args[1] == "run" && os.Args[2] == "--":
		os.Exit(run(os.Args[3:]))
	// The archive code on its own: to look into or restore a downloaded state version exactly as a run
	// would, and for the benchmarks.
	case len(os.Args) == 3 && os.Args[1] == "pack":
		out := bufio.NewWriterSize(os.Stdout, 1<<20)
		err := packState(os.Args[2], out, func(w string) { say("%s", w) })
		if err == nil {
			err = out.Flush()
		}
		if err != nil {
			os.Exit(fatal("pack: %v", err))
		}
	case len(os.Args) == 3 && os.Args[1] == "unpack":
		if err := unpackState(os.Args[2], bufio.NewReaderSize(os.Stdin, 1<<20), func(w string) { say("%s", w) }); err != nil {
			os.Exit(fatal("unpack: %v", err))
		}
	default:
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(exitInfra)
	}
}

// install copies the running executable to dest, for an init container to share it through an emptyDir.
func install(dest string) error {
	src, err := os.Open("/proc/self/exe")
	if err != nil {
		return err
	}
	defer src.Close()
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return err
	}
	tmp := dest + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, src); err != nil {
		out.Close()
		return err
	}
	if err := out.Chmod(0o755); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dest)
}

type config struct {
	agentURL, runID, credential           string
	grace                                 time.Duration
	logMaxBytes                           int64
	restore                               bool
	runnerDir, stateDir, logsDir, secrets string
	// An ad-hoc template's files are fetched into templateDir (/template) before it starts.
	templateFiles bool
	templateDir   string
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func loadConfig() (*config, error) {
	c := &config{
		agentURL:  os.Getenv("GG_AGENT_URL"),
		runID:     os.Getenv("GG_RUN_ID"),
		restore:   os.Getenv("GG_RESTORE") == "1",
		runnerDir: envOr("GG_RUNNER_DIR", "/var/run/glider-gun"),
		stateDir:  envOr("GG_STATE_DIR", "/state"),
		logsDir:   envOr("GG_LOGS_DIR", "/logs"),
		secrets:   envOr("GG_SECRETS_DIR", "/secrets"),

		templateFiles: os.Getenv("GG_TEMPLATE_FILES") == "1",
		templateDir:   envOr("GG_TEMPLATE_DIR", "/template"),
	}
	_, overSocket := unixSocketPath(c.agentURL)
	if u, err := url.Parse(c.agentURL); !overSocket && (err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "") {
		return nil, fmt.Errorf("GG_AGENT_URL must be an http(s) URL or unix:///<absolute path of a socket>, not %q", c.agentURL)
	}
	if c.runID == "" {
		return nil, errors.New("GG_RUN_ID is not set")
	}
	grace, err := strconv.ParseFloat(envOr("GG_STOP_GRACE_SECONDS", "10"), 64)
	if err != nil || grace < 0 {
		return nil, fmt.Errorf("GG_STOP_GRACE_SECONDS must be a number of seconds, not %q", os.Getenv("GG_STOP_GRACE_SECONDS"))
	}
	c.grace = time.Duration(grace * float64(time.Second))
	c.logMaxBytes, err = strconv.ParseInt(envOr("GG_LOG_MAX_BYTES", "0"), 10, 64)
	if err != nil || c.logMaxBytes < 0 {
		return nil, fmt.Errorf("GG_LOG_MAX_BYTES must be a number of bytes, not %q", os.Getenv("GG_LOG_MAX_BYTES"))
	}
	credential, err := os.ReadFile(filepath.Join(c.runnerDir, "credential"))
	if overSocket && errors.Is(err, fs.ErrNotExist) {
		// The socket's relay is the run's own and adds its credential: the template never sees one.
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the credential: %w", err)
	}
	if c.credential = strings.TrimSpace(string(credential)); c.credential == "" {
		return nil, errors.New("the credential file is empty")
	}
	return c, nil
}

// templateEnv is the runner's environment without its own GG_* settings.
func templateEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GG_") {
			env = append(env, kv)
		}
	}
	return env
}

// result is what POST /result carries (api/agent/routes.ts: ResultBody).
type result struct {
	ExitCode int    `json:"exitCode"`
	Signal   string `json:"signal,omitempty"`
	Stopped  bool   `json:"stopped"`
	// outputs.json's bytes (base64 in JSON); the server parses them (core/outputs.ts).
	// A pointer, so an empty file is sent as "" (invalid JSON there, as with Docker) rather than left out.
	OutputsFile  *[]byte  `json:"outputsFile,omitempty"`
	Warnings     []string `json:"warnings"`
	StateVersion int      `json:"stateVersion,omitempty"`
	// Why the state to restore could not be unpacked (a damaged or hostile archive); the template did not start.
	RestoreFailure string `json:"restoreFailure,omitempty"`
}

// runner holds one run's progress.
type runner struct {
	cfg      *config
	agent    *agentClient
	stopping chan struct{} // closed on SIGTERM or SIGINT
	stopped  atomic.Bool
	warnMu   sync.Mutex
	warnings []string
}

func (r *runner) warn(w string) {
	r.warnMu.Lock()
	defer r.warnMu.Unlock()
	r.warnings = append(r.warnings, w)
}

func run(argv []string) int {
	cfg, err := loadConfig()
	if err != nil {
		return fatal("%v", err)
	}
	r := &runner{cfg: cfg, agent: newAgentClient(cfg.agentURL, cfg.runID, cfg.credential), stopping: make(chan struct{})}
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	// A closed stdout must give EPIPE, never end the runner; caught (not ignored) so the template still gets it.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	go func() {
		sig := <-signals
		say("got %s", signalName(sig.(syscall.Signal)))
		r.stopped.Store(true)
		close(r.stopping)
		for range signals { // the pod is going: what matters now is archiving and reporting
		}
	}()
	reaper := startReaper()

	secretsText, err := os.ReadFile(filepath.Join(cfg.secrets, secretsFile))
	if err != nil {
		return fatal("reading the sensitive values to mask: %v", err)
	}
	secretValues, err := secretStrings(secretsText)
	if err != nil {
		return fatal("%s is not a JSON object: %v", secretsFile, err)
	}
	parameters, err := os.ReadFile(filepath.Join(cfg.runnerDir, parametersFile))
	if err != nil {
		return fatal("reading the template parameters: %v", err)
	}

	// /state and /logs start empty, even in a restarted container.
	for _, dir := range []string{cfg.stateDir, cfg.logsDir} {
		if err := emptyDir(dir); err != nil {
			return fatal("emptying %s: %v", dir, err)
		}
	}
	if cfg.restore {
		if err := r.restore(); err != nil {
			if r.stopped.Load() {
				say("stopped while restoring /state: the template was not started and /state is not archived")
				r.warn("stopped before /state was restored: the template was not started and /state was not archived")
				r.report(result{ExitCode: 128 + int(syscall.SIGTERM), Stopped: true}, 10*time.Second)
				return 128 + int(syscall.SIGTERM)
			}
			if damagedArchive(err) {
				// No retry can mend the archive: the run ends as state-corrupt, naming why, and nothing is archived.
				r.report(result{ExitCode: exitInfra, RestoreFailure: err.Error()}, reportRetryFor)
			}
			return fatal("restoring /state: %v", err)
		}
	}
	if cfg.templateFiles {
		if err := emptyDir(cfg.templateDir); err != nil {
			return fatal("emptying %s: %v", cfg.templateDir, err)
		}
		if err := r.download("the template's files", cfg.templateDir, r.agent.getTemplate); err != nil {
			return fatal("fetching the template's files: %v", err)
		}
	}
	if err := writeParameters(cfg.stateDir, parameters); err != nil {
		return fatal("writing %s: %v", parametersFile, err)
	}
	// What the previous run wrote is not this run's outputs: a run that writes none reports none.
	if err := os.RemoveAll(filepath.Join(cfg.stateDir, outputsFile)); err != nil {
		return fatal("removing the previous run's %s: %v", outputsFile, err)
	}

	if r.stopped.Load() {
		// A run stopped before its template started still archives /state as
		// restored (and has no outputs).
		say("stopped before the template started")
		r.warn("stopped before the template started")
		return r.finish(result{ExitCode: 128 + int(syscall.SIGTERM), Stopped: true}, false)
	}
	return r.finish(r.runTemplate(argv, reaper, secretValues), true)
}

// restore unpacks the state to restore, retrying while the agent cannot be reached.
func (r *runner) restore() error {
	say("restoring /state")
	return r.download("the state to restore", r.cfg.stateDir, r.agent.getState)
}

// download unpacks an archive the agent serves into dir (like unpackState: nothing outside dir, never
// through a link), retrying while the agent cannot be reached or the download is cut.
func (r *runner) download(what, dir string, get func(context.Context) (io.ReadCloser, error)) error {
	ctx := context.Background()
	deadline := time.Now().Add(restoreRetryFor)
	for {
		var body io.ReadCloser
		err := r.agent.retry(ctx, "fetching "+what, time.Until(deadline), r.stopped.Load, func() error {
			var err error
			body, err = get(ctx)
			return err
		})
		if err != nil {
			return err
		}
		if body == nil {
			return nil // nothing to restore
		}
		err = unpackState(dir, &netReader{body}, r.warn)
		body.Close()
		var ne *netError
		if err == nil || !errors.As(err, &ne) || time.Now().After(deadline) || r.stopped.Load() {
			return err
		}
		// The download was cut: start again in an empty folder.
		r.agent.notice("the download of %s was cut (%v); starting it again", what, ne.err)
		if err := emptyDir(dir); err != nil {
			return err
		}
		time.Sleep(retryMin)
	}
}

// netError is a failure to read the download, which another try may not have.
type netError struct{ err error }

func (e *netError) Error() string { return "downloading: " + e.err.Error() }
func (e *netError) Unwrap() error { return e.err }

type netReader struct{ r io.Reader }

func (n *netReader) Read(p []byte) (int, error) {
	k, err := n.r.Read(p)
	if err != nil && err != io.EOF {
		err = &netError{err}
	}
	return k, err
}

func emptyDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := os.RemoveAll(filepath.Join(dir, n)); err != nil {
			return err
		}
	}
	return nil
}

// writeParameters replaces <state>/template-parameters.json: whatever the restored state has there (even a
// link or a folder) is removed, never followed.
func writeParameters(stateDir string, content []byte) error {
	if err := os.RemoveAll(filepath.Join(stateDir, parametersFile)); err != nil {
		return err
	}
	root, err := os.OpenRoot(stateDir)
	if err != nil {
		return err
	}
	defer root.Close()
	f, err := root.OpenFile(parametersFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(content); err != nil {
		return err
	}
	if err := fchmod(f, 0o644); err != nil {
		return err
	}
	return f.Close()
}

// runTemplate runs the template until it ends (or is stopped), with its log stored as it is produced.
func (r *runner) runTemplate(argv []string, reaper *reaper, secretValues []string) result {
	collector := NewLogCollector(r.agent, secretValues, r.cfg.logMaxBytes, map[string]io.Writer{"stdout": os.Stdout, "stderr": os.Stderr})
	tailer := newFileTailer(r.cfg.logsDir, collector.Entry)
	endLog := func() {
		tailer.poll() // what the files hold at the end
		for _, w := range collector.End(logAckWait) {
			say("%s", w)
			r.warn(w)
		}
	}

	outR, outW, err := os.Pipe()
	if err != nil {
		r.warn(fmt.Sprintf("the template could not be started: %v", err))
		return result{ExitCode: exitInfra}
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		r.warn(fmt.Sprintf("the template could not be started: %v", err))
		return result{ExitCode: exitInfra}
	}
	pid, err := reaper.start(argv, templateEnv(), outW, errW)
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		code := exitInfra
		var se *startError
		if errors.As(err, &se) {
			code = se.code
		}
		// Where a shell would say it: on the run's stderr.
		collector.Entry("stderr", []byte(fmt.Sprintf("pod-runner: cannot start the template: %v\n", err)))
		endLog()
		return result{ExitCode: code}
	}
	say("template started (pid %d)", pid)

	var pumps sync.WaitGroup
	pump := func(stream string, f *os.File) {
		defer pumps.Done()
		buf := make([]byte, 64*1024)
		for {
			n, err := f.Read(buf)
			if n > 0 {
				collector.Entry(stream, buf[:n])
			}
			if err != nil {
				return
			}
		}
	}
	pumps.Add(2)
	go pump("stdout", outR)
	go pump("stderr", errR)
	tailing := make(chan struct{})
	tailed := make(chan struct{})
	go func() {
		defer close(tailed)
		tick := time.NewTicker(logFilesEvery)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				tailer.poll()
			case <-tailing:
				return
			}
		}
	}()

	var ws syscall.WaitStatus
	select {
	case ws = <-reaper.exited:
	case <-r.stopping:
		say("SIGTERM to the template's processes; SIGKILL in %s", r.cfg.grace)
		killGroup(pid, syscall.SIGTERM)
		select {
		case ws = <-reaper.exited:
		case <-time.After(r.cfg.grace):
			say("grace period over: SIGKILL")
			killGroup(pid, syscall.SIGKILL)
			killLeftovers()
			ws = <-reaper.exited
		}
	}
	stopped := r.stopped.Load()
	// The main process has ended: what is left goes, as when a container ends.
	killGroup(pid, syscall.SIGKILL)
	killLeftovers()

	drained := make(chan struct{})
	go func() { pumps.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(pipeDrainAfterEnd):
		say("the template's output is still open after it ended; not waiting for more")
		outR.Close()
		errR.Close()
		<-drained
	}
	outR.Close()
	errR.Close()
	close(tailing)
	<-tailed

	res := result{Stopped: stopped}
	switch {
	case ws.Signaled():
		res.ExitCode = 128 + int(ws.Signal())
		res.Signal = signalName(ws.Signal())
		say("template killed by %s", res.Signal)
	default:
		res.ExitCode = ws.ExitStatus()
		say("template exited with code %d", res.ExitCode)
	}
	endLog()
	return res
}

// finish reads the outputs (when the template was started), archives /state, reports the result and gives the runner's exit code.
func (r *runner) finish(res result, started bool) int {
	failed := false
	if started {
		raw, outputWarnings := readOutputs(r.cfg.stateDir)
		for _, w := range outputWarnings {
			r.warn(w)
		}
		if raw != nil {
			res.OutputsFile = &raw
		}
	}

	var archiveWarnings []string
	version, err := r.agent.putState(context.Background(), archiveRetryFor, func(w io.Writer) error {
		archiveWarnings = archiveWarnings[:0] // each attempt packs afresh
		return packState(r.cfg.stateDir, w, func(m string) { archiveWarnings = append(archiveWarnings, m) })
	})
	for _, w := range archiveWarnings {
		r.warn(w)
	}
	if err != nil {
		failed = true
		fmt.Fprintf(os.Stderr, "pod-runner: archiving /state failed: %v\n", err)
		r.warn(fmt.Sprintf("archiving /state failed: %v", err))
	} else {
		res.StateVersion = version.Version
		say("/state archived as version %d (%d bytes)", version.Version, version.SizeBytes)
	}
	if !r.report(res, reportRetryFor) {
		failed = true
	}
	if failed {
		fatal("the run ended (exit code %d) but its state or result could not be stored", res.ExitCode)
		return exitInfra
	}
	return res.ExitCode
}

// report posts the result with the warnings gathered so far; false if it could not be delivered.
func (r *runner) report(res result, retryFor time.Duration) bool {
	r.warnMu.Lock()
	res.Warnings = boundWarnings(r.warnings)
	r.warnMu.Unlock()
	body, err := json.Marshal(res)
	if err == nil {
		err = r.agent.postResult(context.Background(), retryFor, body)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "pod-runner: reporting the result failed: %v\n", err)
		return false
	}
	say("result reported (exit code %d%s, %d warning(s))", res.ExitCode, map[bool]string{true: ", stopped"}[res.Stopped], len(res.Warnings))
	return true
}

// boundWarnings keeps within what the agent accepts: 100 warnings of at most 4096 characters.
func boundWarnings(ws []string) []string {
	out := make([]string, 0, min(len(ws), maxWarnings))
	for i, w := range ws {
		if i == maxWarnings-1 && len(ws) > maxWarnings {
			out = append(out, fmt.Sprintf("… and %d more warnings", len(ws)-i))
			break
		}
		if len(w) > maxWarningBytes {
			cut := maxWarningBytes
			for cut > 0 && !utf8.RuneStart(w[cut]) {
				cut--
			}
			w = w[:cut] + "…"
		}
		out = append(out, w)
	}
	return out
}
