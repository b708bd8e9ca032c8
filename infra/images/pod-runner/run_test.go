package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The full-run tests start this test binary as the runner (POD_RUNNER_TEST_MAIN=1), with a real child
// process, real signals and an exit code, against fakeAgent: an agent API with the semantics of
// api/agent/routes.ts.
func TestMain(m *testing.M) {
	if os.Getenv("POD_RUNNER_TEST_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

const testToken = "tok-123"

type fakeAgent struct {
	mu            sync.Mutex
	restore       []byte // gzip'd tar to restore; nil: 204
	stateStatus   int    // when set, GET state answers only this
	stateFailures int    // PUT state answers 503 this many times first
	logs          map[string][]byte
	logCalls      []string   // every frame received: stream@offset+length
	pieces        []logFrame // what was stored, in the order it was stored
	noAuth        bool       // over a unix socket: calls carry no credential
	socket        string     // listen on this unix socket rather than on TCP
	// Log behaviours, each once: the first stdout upload stores only half and answers 409; the second
	// is stored but answered 500 (a lost answer).
	partialFirst, loseSecond bool
	stdoutCalls              int
	archives                 [][]byte
	results                  []map[string]any
	marks                    map[string]string // a log stream containing the key creates the file
	stateAsked               chan struct{}     // closed when the state is asked for (then answered a second later)
	srv                      *httptest.Server
}

// newFakeAgent starts the agent, configured by setup first.
func newFakeAgent(t *testing.T, setup func(a *fakeAgent)) *fakeAgent {
	a := &fakeAgent{logs: map[string][]byte{}, marks: map[string]string{}}
	if setup != nil {
		setup(a)
	}
	a.srv = httptest.NewUnstartedServer(http.HandlerFunc(a.serve))
	if a.socket != "" {
		a.srv.Listener.Close()
		l, err := net.Listen("unix", a.socket)
		must(t, err)
		a.srv.Listener = l
	}
	a.srv.Start()
	t.Cleanup(a.srv.Close)
	return a
}

// url is GG_AGENT_URL for the runner.
func (a *fakeAgent) url() string {
	if a.socket != "" {
		return "unix://" + a.socket
	}
	return a.srv.URL
}

func (a *fakeAgent) serve(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	asked := a.stateAsked
	a.stateAsked = nil
	a.mu.Unlock()
	if r.Method == http.MethodGet && asked != nil {
		close(asked) // the test signals the runner while the answer is slow
		time.Sleep(time.Second)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if want := "Bearer " + testToken; a.noAuth && r.Header.Get("Authorization") != "" || !a.noAuth && r.Header.Get("Authorization") != want {
		http.Error(w, `{"code":"UNAUTHENTICATED","message":"no"}`, http.StatusUnauthorized)
		return
	}
	body, _ := io.ReadAll(r.Body)
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/v1/agent/runs/run-1/state":
		switch {
		case a.stateStatus != 0:
			w.WriteHeader(a.stateStatus)
		case a.restore == nil:
			w.WriteHeader(http.StatusNoContent)
		default:
			w.Header().Set("Content-Type", "application/gzip")
			_, _ = w.Write(a.restore)
		}
	case r.Method == http.MethodPost && r.URL.Path == "/v1/agent/runs/run-1/log-frames":
		if r.Header.Get("Content-Type") != logFramesType {
			http.Error(w, "content type", http.StatusUnsupportedMediaType)
			return
		}
		frames, err := decodeFrames(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		a.storeFrames(w, frames)
	case r.Method == http.MethodPut && r.URL.Path == "/v1/agent/runs/run-1/state":
		if r.Header.Get("Content-Type") != "application/gzip" {
			http.Error(w, "content type", http.StatusUnsupportedMediaType)
			return
		}
		if len(r.TransferEncoding) == 0 || r.TransferEncoding[0] != "chunked" {
			http.Error(w, "expected a streamed (chunked) archive", http.StatusBadRequest)
			return
		}
		if a.stateFailures > 0 {
			a.stateFailures--
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		a.archives = append(a.archives, body)
		_ = json.NewEncoder(w).Encode(map[string]any{"version": 7, "sha256": "abc", "sizeBytes": len(body)})
	case r.Method == http.MethodPost && r.URL.Path == "/v1/agent/runs/run-1/result":
		var result map[string]any
		if err := json.Unmarshal(body, &result); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		a.results = append(a.results, result)
		w.WriteHeader(http.StatusNoContent)
	default:
		http.NotFound(w, r)
	}
}

// storeFrames is the agent's transaction: every frame stored in order, or none (409 with what is held).
func (a *fakeAgent) storeFrames(w http.ResponseWriter, frames []logFrame) {
	held := map[string]int64{}
	for stream, b := range a.logs {
		held[stream] = int64(len(b))
	}
	refuse := func() {
		w.WriteHeader(http.StatusConflict)
		_ = json.NewEncoder(w).Encode(map[string]any{"code": "LOG_OFFSET_MISMATCH", "message": "m", "storedBytes": held})
	}
	hasStdout := false
	after := map[string]int64{}
	for stream, n := range held {
		after[stream] = n
	}
	for _, f := range frames {
		a.logCalls = append(a.logCalls, fmt.Sprintf("%s@%d+%d", f.stream, f.offset, len(f.data)))
		hasStdout = hasStdout || f.stream == "stdout"
		if f.offset > after[f.stream] {
			refuse()
			return
		}
		after[f.stream] = max(after[f.stream], f.offset+int64(len(f.data)))
	}
	if hasStdout {
		a.stdoutCalls++
	}
	for _, f := range frames {
		fresh := f.data[held[f.stream]-f.offset:]
		if len(fresh) == 0 {
			continue
		}
		if f.stream == "stdout" && a.partialFirst && a.stdoutCalls == 1 && len(fresh) > 1 {
			// A server that stored part of an earlier call: only half of this is kept, and nothing else.
			a.logs[f.stream] = append(a.logs[f.stream], fresh[:len(fresh)/2]...)
			a.pieces = append(a.pieces, logFrame{stream: f.stream, data: fresh[:len(fresh)/2]})
			held[f.stream] += int64(len(fresh) / 2)
			refuse()
			return
		}
		a.logs[f.stream] = append(a.logs[f.stream], fresh...)
		a.pieces = append(a.pieces, logFrame{stream: f.stream, offset: held[f.stream], data: append([]byte(nil), fresh...)})
		held[f.stream] += int64(len(fresh))
	}
	for key, file := range a.marks {
		for stream := range held {
			if bytes.Contains(a.logs[stream], []byte(key)) {
				_ = os.WriteFile(file, nil, 0o644)
			}
		}
	}
	if hasStdout && a.loseSecond && a.stdoutCalls == 2 {
		http.Error(w, "lost", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// combined is the log as the combined view shows it: every piece in the order it was stored.
func (a *fakeAgent) combined() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var b strings.Builder
	for _, p := range a.pieces {
		b.Write(p.data)
	}
	return b.String()
}

// reported gives what the runner stored: its results and archives.
func (a *fakeAgent) reported() ([]map[string]any, [][]byte, []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]map[string]any(nil), a.results...), append([][]byte(nil), a.archives...), append([]string(nil), a.logCalls...)
}

func (a *fakeAgent) log(stream string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return string(a.logs[stream])
}

// runDirs are a run's folders, as the pod would mount them.
type runDirs struct{ runner, state, logs, secrets string }

func newRunDirs(t *testing.T) runDirs {
	base := t.TempDir()
	d := runDirs{filepath.Join(base, "runner"), filepath.Join(base, "state"), filepath.Join(base, "logs"), filepath.Join(base, "secrets")}
	for _, dir := range []string{d.runner, d.state, d.logs, d.secrets} {
		must(t, os.Mkdir(dir, 0o755))
	}
	must(t, os.WriteFile(filepath.Join(d.runner, "credential"), []byte(testToken+"\n"), 0o600))
	must(t, os.WriteFile(filepath.Join(d.runner, "template-parameters.json"), []byte("{\n  \"message\": \"hello\"\n}\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(d.secrets, "template-secrets.json"), []byte("{\n  \"password\": \"hunter2\",\n  \"pin\": 12345\n}\n"), 0o444))
	return d
}

type runner_ struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startRunner(t *testing.T, a *fakeAgent, d runDirs, extraEnv []string, argv ...string) *runner_ {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"run", "--"}, argv...)...)
	cmd.Env = append(os.Environ(),
		"POD_RUNNER_TEST_MAIN=1", "GG_AGENT_URL="+a.url(), "GG_RUN_ID=run-1",
		"GG_RUNNER_DIR="+d.runner, "GG_STATE_DIR="+d.state, "GG_LOGS_DIR="+d.logs, "GG_SECRETS_DIR="+d.secrets,
		"STATE="+d.state, "LOGS="+d.logs)
	cmd.Env = append(cmd.Env, extraEnv...)
	r := &runner_{cmd: cmd, stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	cmd.Stdout, cmd.Stderr = r.stdout, r.stderr
	must(t, cmd.Start())
	return r
}

func (r *runner_) wait(t *testing.T) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = r.cmd.Process.Kill()
		t.Fatalf("the runner did not end; stderr:\n%s", r.stderr)
	}
	return r.cmd.ProcessState.ExitCode()
}

func archiveOf(t *testing.T, files map[string]string, links map[string]string) []byte {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, content := range files {
		must(t, tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(content))}))
		_, err := tw.Write([]byte(content))
		must(t, err)
	}
	for name, target := range links {
		must(t, tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777}))
	}
	must(t, tw.Close())
	must(t, gz.Close())
	return buf.Bytes()
}

func archiveFiles(t *testing.T, archive []byte) map[string]string {
	dir := t.TempDir()
	if _, err := unpackBytes(dir, archive); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	must(t, filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			content, _ := os.ReadFile(p)
			rel, _ := filepath.Rel(dir, p)
			files[rel] = string(content)
		}
		return err
	}))
	return files
}

func requireShell(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
}

func TestRunEndToEnd(t *testing.T) {
	requireShell(t)
	d := newRunDirs(t)
	hostFile := filepath.Join(t.TempDir(), "host-file")
	must(t, os.WriteFile(hostFile, []byte("host"), 0o644))
	liveStdout, liveFile := filepath.Join(t.TempDir(), "live-stdout"), filepath.Join(t.TempDir(), "live-file")
	a := newFakeAgent(t, func(a *fakeAgent) {
		// The previous run left a count, and a link where the parameters go: it must be replaced, not followed.
		a.restore = archiveOf(t, map[string]string{"run-count": "1\n"}, map[string]string{"template-parameters.json": hostFile})
		a.partialFirst, a.loseSecond = true, true
		a.stateFailures = 1
		a.marks["first line"] = liveStdout
		a.marks["file line"] = liveFile
	})
	script := `
set -e
echo "first line, password hunter2, pin 12345"
echo "to stderr, password hunter2" >&2
echo "file line hunter2" > "$LOGS/app.log"
sleep 1.5
test -f "$LIVE_STDOUT" && echo "stdout was stored while running"
test -f "$LIVE_FILE" && echo "the log file was stored while running"
i=0; while [ $i -lt 3000 ]; do echo "line $i: some padding to make a few hundred kilobytes of log ......................................."; i=$((i+1)); done
env | grep '^GG_' || echo "no GG_ variables"
echo "TF_VAR_x=$TF_VAR_x"
cat "$STATE/template-parameters.json"
echo $(( $(cat "$STATE/run-count") + 1 )) > "$STATE/run-count"
printf '{"url":"https://x","n":1}' > "$STATE/outputs.json"
printf 'unterminated hunt' 
printf 'er2' 
exit 3
`
	r := startRunner(t, a, d, []string{"GG_RESTORE=1", "TF_VAR_x=kept", "LIVE_STDOUT=" + liveStdout, "LIVE_FILE=" + liveFile}, "/bin/sh", "-c", script)
	code := r.wait(t)
	if code != 3 {
		t.Fatalf("exit code %d; stderr:\n%s", code, r.stderr)
	}
	stdout := a.log("stdout")
	for _, want := range []string{
		"first line, password ***, pin ***\n",
		"stdout was stored while running\n",
		"the log file was stored while running\n",
		"line 2999: some padding",
		"no GG_ variables\n",
		"TF_VAR_x=kept\n",
		"{\n  \"message\": \"hello\"\n}\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q", want)
		}
	}
	if !strings.HasSuffix(stdout, "unterminated ***") {
		t.Errorf("stdout ends with %q", stdout[max(0, len(stdout)-40):])
	}
	if strings.Contains(stdout, "hunter2") || strings.Contains(stdout, "12345") {
		t.Error("a secret reached the log")
	}
	if r.stdout.String() != stdout {
		t.Errorf("the runner's own stdout (kubectl logs) differs from the stored log: %d vs %d bytes", len(r.stdout.String()), len(stdout))
	}
	if got := a.log("stderr"); got != "to stderr, password ***\n" {
		t.Errorf("stderr: %q", got)
	}
	// docker logs / kubectl logs read the runner's own output: masked like the stored log.
	if !strings.Contains(r.stderr.String(), "to stderr, password ***\n") || strings.Contains(r.stderr.String(), "hunter2") {
		t.Errorf("the runner's own stderr:\n%s", r.stderr)
	}
	if got := a.log("file:app.log"); got != "file line ***\n" {
		t.Errorf("file:app.log: %q", got)
	}
	if b, _ := os.ReadFile(hostFile); string(b) != "host" {
		t.Errorf("the host file was written through the restored link: %q", b)
	}
	results, archives, logCalls := a.reported()
	if len(results) != 1 {
		t.Fatalf("results: %v", results)
	}
	res := results[0]
	want := `{"exitCode":3,"outputsFile":"eyJ1cmwiOiJodHRwczovL3giLCJuIjoxfQ==","stateVersion":7,"stopped":false,"warnings":[]}`
	if got, _ := json.Marshal(res); string(got) != want {
		t.Errorf("result %s\nwant   %s", got, want)
	}
	if len(archives) != 1 {
		t.Fatalf("%d archives", len(archives))
	}
	files := archiveFiles(t, archives[0])
	if files["run-count"] != "2\n" || files["template-parameters.json"] != "{\n  \"message\": \"hello\"\n}\n" || files["outputs.json"] == "" {
		t.Errorf("archived state: %q", files)
	}
	// Uploads: at offsets, in order, never more than 256 KiB, with the 409 and the lost answer resent.
	var stdoutCalls []string
	for _, c := range logCalls {
		if strings.HasPrefix(c, "stdout@") {
			stdoutCalls = append(stdoutCalls, c)
		}
	}
	if len(stdoutCalls) < 4 {
		t.Errorf("stdout uploads: %v", stdoutCalls)
	}
	for _, c := range stdoutCalls {
		n, _ := strconv.Atoi(c[strings.Index(c, "+")+1:])
		if n > 256*1024 {
			t.Errorf("an upload of %d bytes", n)
		}
	}
	if lines := strings.Count(r.stderr.String(), "[pod-runner]"); lines > 12 {
		t.Errorf("the runner says too much (%d lines):\n%s", lines, r.stderr)
	}
	t.Logf("runner's stderr:\n%s", r.stderr)
}

func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !strings.Contains(string(stat[strings.LastIndexByte(string(stat), ')'):]), ") Z")
}

func waitForFile(t *testing.T, p string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(p); err == nil && len(b) > 0 && bytes.HasSuffix(b, []byte("\n")) {
			return strings.TrimSpace(string(b))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never appeared", p)
	return ""
}

func TestSIGTERMStopsTheGroupThenArchives(t *testing.T) {
	requireShell(t)
	a := newFakeAgent(t, nil)
	d := newRunDirs(t)
	// A child in the group, one that left it (setsid), and the main process waiting.
	script := `sleep 1000 & echo $! > "$STATE/child.pid"
if command -v setsid >/dev/null; then setsid sleep 1000 & echo $! > "$STATE/other.pid"; fi
echo ready > "$STATE/ready"; echo "working"; wait`
	r := startRunner(t, a, d, []string{"GG_STOP_GRACE_SECONDS=5"}, "/bin/sh", "-c", script)
	waitForFile(t, filepath.Join(d.state, "ready"))
	child, _ := strconv.Atoi(waitForFile(t, filepath.Join(d.state, "child.pid")))
	started := time.Now()
	must(t, r.cmd.Process.Signal(syscall.SIGTERM))
	code := r.wait(t)
	if code != 143 {
		t.Errorf("exit code %d; stderr:\n%s", code, r.stderr)
	}
	if time.Since(started) > 4*time.Second {
		t.Errorf("took %s: the group did not get SIGTERM", time.Since(started))
	}
	if alive(child) {
		t.Errorf("the template's child %d is still running", child)
	}
	if b, err := os.ReadFile(filepath.Join(d.state, "other.pid")); err == nil {
		if other, _ := strconv.Atoi(strings.TrimSpace(string(b))); other > 0 && alive(other) {
			t.Errorf("a process that left the group (%d) is still running", other)
		}
	}
	results, archives, _ := a.reported()
	if len(results) != 1 || len(archives) != 1 {
		t.Fatalf("results %v, %d archives", results, len(archives))
	}
	res := results[0]
	if res["exitCode"] != 143.0 || res["signal"] != "SIGTERM" || res["stopped"] != true || res["stateVersion"] != 7.0 {
		t.Errorf("result %v", res)
	}
	if files := archiveFiles(t, archives[0]); files["ready"] != "ready\n" {
		t.Errorf("archive: %q", files)
	}
	if got := a.log("stdout"); got != "working\n" {
		t.Errorf("stdout %q", got)
	}
}

func TestSIGKILLAfterTheGracePeriod(t *testing.T) {
	requireShell(t)
	a := newFakeAgent(t, nil)
	d := newRunDirs(t)
	r := startRunner(t, a, d, []string{"GG_STOP_GRACE_SECONDS=1"}, "/bin/sh", "-c", `trap '' TERM; echo ready > "$STATE/ready"; while :; do sleep 0.1; done`)
	waitForFile(t, filepath.Join(d.state, "ready"))
	must(t, r.cmd.Process.Signal(syscall.SIGTERM))
	if code := r.wait(t); code != 137 {
		t.Errorf("exit code %d; stderr:\n%s", code, r.stderr)
	}
	if results, _, _ := a.reported(); len(results) != 1 || results[0]["signal"] != "SIGKILL" || results[0]["stopped"] != true {
		t.Errorf("results %v", results)
	}
}

func TestCommandNotFound(t *testing.T) {
	a := newFakeAgent(t, nil)
	d := newRunDirs(t)
	r := startRunner(t, a, d, nil, "no-such-entrypoint-xyz", "deploy")
	if code := r.wait(t); code != 127 {
		t.Errorf("exit code %d; stderr:\n%s", code, r.stderr)
	}
	if got := a.log("stderr"); got != "pod-runner: cannot start the template: no-such-entrypoint-xyz: command not found\n" {
		t.Errorf("stderr log %q", got)
	}
	results, archives, _ := a.reported()
	if len(results) != 1 || results[0]["exitCode"] != 127.0 || len(archives) != 1 {
		t.Fatalf("results %v, %d archives", results, len(archives))
	}
	if files := archiveFiles(t, archives[0]); files["template-parameters.json"] == "" {
		t.Errorf("archive: %q", files)
	}
}

func TestInfrastructureFailuresNeverStartTheTemplate(t *testing.T) {
	requireShell(t)
	for name, c := range map[string]struct {
		setup func(a *fakeAgent)
		// What the report names as the reason the state could not be restored; none when nothing was reported.
		restoreFailure string
	}{
		"the agent refuses": {setup: func(a *fakeAgent) { a.stateStatus = http.StatusForbidden }},
		"a hostile archive": {
			setup:          func(a *fakeAgent) { a.restore = archiveOf(t, map[string]string{"../evil": "x"}, nil) },
			restoreFailure: "archive entry '../evil' points outside the state folder",
		},
		"a write through a link": {
			setup: func(a *fakeAgent) {
				a.restore = hostile(t, tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/tmp"}, tar.Header{Name: "l/evil", Typeflag: tar.TypeReg})
			},
			restoreFailure: "refusing to restore through l: not a real folder",
		},
		"an archive cut short": {
			setup: func(a *fakeAgent) {
				whole := archiveOf(t, map[string]string{"big": strings.Repeat("x", 1<<20)}, nil)
				a.restore = whole[:len(whole)/2]
			},
			restoreFailure: "unexpected EOF",
		},
	} {
		t.Run(name, func(t *testing.T) {
			a := newFakeAgent(t, c.setup)
			d := newRunDirs(t)
			marker := filepath.Join(t.TempDir(), "started")
			r := startRunner(t, a, d, []string{"GG_RESTORE=1"}, "/bin/sh", "-c", "touch "+marker)
			if code := r.wait(t); code != 125 {
				t.Errorf("exit code %d", code)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Error("the template was started")
			}
			if !strings.HasPrefix(r.stderr.String(), "[pod-runner] restoring /state\n") || !strings.Contains(r.stderr.String(), "pod-runner: restoring /state: ") {
				t.Errorf("stderr:\n%s", r.stderr)
			}
			results, archives, _ := a.reported()
			if len(archives) != 0 {
				t.Errorf("%d archives: a state that was not restored is never archived", len(archives))
			}
			switch {
			case c.restoreFailure == "" && len(results) != 0:
				t.Errorf("results %v: the agent's refusal is the agent's to record", results)
			case c.restoreFailure != "" && (len(results) != 1 || !strings.Contains(fmt.Sprint(results[0]["restoreFailure"]), c.restoreFailure) || results[0]["exitCode"] != 125.0):
				t.Errorf("results %v: want one report naming %q", results, c.restoreFailure)
			}
		})
	}
}

func TestInstall(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "gg", "pod-runner")
	cmd := exec.Command(os.Args[0], "install", dest)
	cmd.Env = append(os.Environ(), "POD_RUNNER_TEST_MAIN=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatal(err, string(out))
	}
	info, err := os.Stat(dest)
	must(t, err)
	self, _ := os.Stat(os.Args[0])
	if info.Mode().Perm() != 0o755 || info.Size() != self.Size() {
		t.Errorf("mode %o, %d bytes", info.Mode().Perm(), info.Size())
	}
}

func TestPackAndUnpackCommands(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	must(t, os.WriteFile(filepath.Join(src, "locked"), []byte("x"), 0o600))
	must(t, os.Chmod(filepath.Join(src, "locked"), 0))
	must(t, os.Symlink("/etc/passwd", filepath.Join(src, "link")))
	pack := exec.Command(os.Args[0], "pack", src)
	pack.Env = append(os.Environ(), "POD_RUNNER_TEST_MAIN=1")
	archive, err := pack.Output()
	must(t, err)
	unpack := exec.Command(os.Args[0], "unpack", dst)
	unpack.Env = pack.Env
	unpack.Stdin = bytes.NewReader(archive)
	if out, err := unpack.CombinedOutput(); err != nil {
		t.Fatal(err, string(out))
	}
	if info, err := os.Lstat(filepath.Join(dst, "locked")); err != nil || info.Mode().Perm() != 0 {
		t.Errorf("locked: %v, %v", info, err)
	}
	if target, err := os.Readlink(filepath.Join(dst, "link")); err != nil || target != "/etc/passwd" {
		t.Errorf("link: %q, %v", target, err)
	}
	// What a run would refuse, the command refuses too.
	refused := exec.Command(os.Args[0], "unpack", t.TempDir())
	refused.Env = pack.Env
	refused.Stdin = bytes.NewReader(archiveOf(t, map[string]string{"../evil": "x"}, nil))
	if out, err := refused.CombinedOutput(); err == nil || !strings.Contains(string(out), "points outside the state folder") {
		t.Errorf("a hostile archive was unpacked: %v %s", err, out)
	}
}

func TestStoppedBeforeTheTemplateStarted(t *testing.T) {
	requireShell(t)
	asked := make(chan struct{})
	a := newFakeAgent(t, func(a *fakeAgent) {
		a.restore = archiveOf(t, map[string]string{"outputs.json": `{"old":true}`, "kept": "k"}, nil)
		a.stateAsked = asked
	})
	d := newRunDirs(t)
	marker := filepath.Join(t.TempDir(), "started")
	r := startRunner(t, a, d, []string{"GG_RESTORE=1"}, "/bin/sh", "-c", "touch "+marker)
	<-asked
	must(t, r.cmd.Process.Signal(syscall.SIGTERM))
	if code := r.wait(t); code != 143 {
		t.Errorf("exit code %d; stderr:\n%s", code, r.stderr)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the template was started")
	}
	results, archives, _ := a.reported()
	want := `{"exitCode":143,"stateVersion":7,"stopped":true,"warnings":["stopped before the template started"]}`
	if len(results) != 1 || len(archives) != 1 {
		t.Fatalf("results %v, %d archives", results, len(archives))
	}
	if got, _ := json.Marshal(results[0]); string(got) != want {
		t.Errorf("result %s, want %s", got, want)
	}
	if files := archiveFiles(t, archives[0]); files["kept"] != "k" || files["template-parameters.json"] == "" {
		t.Errorf("archive %q", files)
	}
}

// The previous run's outputs.json comes back with /state: a run that writes none must not report it.
func TestPreviousOutputsAreNotReported(t *testing.T) {
	requireShell(t)
	hostFile := filepath.Join(t.TempDir(), "host-outputs.json")
	must(t, os.WriteFile(hostFile, []byte(`{"host":true}`), 0o644))
	for name, restore := range map[string][]byte{
		"a file":                archiveOf(t, map[string]string{"outputs.json": `{"old":true}`, "kept": "k"}, nil),
		"a link to a host file": archiveOf(t, map[string]string{"kept": "k"}, map[string]string{"outputs.json": hostFile}),
		"a folder": hostile(t, tar.Header{Name: "outputs.json/", Typeflag: tar.TypeDir, Mode: 0o755},
			tar.Header{Name: "outputs.json/inside", Typeflag: tar.TypeReg}, tar.Header{Name: "kept", Typeflag: tar.TypeReg}),
	} {
		t.Run(name, func(t *testing.T) {
			a := newFakeAgent(t, func(a *fakeAgent) { a.restore = restore })
			d := newRunDirs(t)
			r := startRunner(t, a, d, []string{"GG_RESTORE=1"}, "/bin/sh", "-c", `test -e "$STATE/kept" && test ! -e "$STATE/outputs.json" && echo "no outputs.json when started"`)
			if code := r.wait(t); code != 0 {
				t.Fatalf("exit code %d; stderr:\n%s", code, r.stderr)
			}
			results, archives, _ := a.reported()
			if len(results) != 1 || len(archives) != 1 {
				t.Fatalf("results %v, %d archives", results, len(archives))
			}
			if got, _ := json.Marshal(results[0]); string(got) != `{"exitCode":0,"stateVersion":7,"stopped":false,"warnings":[]}` {
				t.Errorf("result %s", got)
			}
			if got := a.log("stdout"); got != "no outputs.json when started\n" {
				t.Errorf("stdout %q", got)
			}
			for file := range archiveFiles(t, archives[0]) {
				if strings.HasPrefix(file, "outputs.json") {
					t.Errorf("archived %s", file)
				}
			}
			if b, _ := os.ReadFile(hostFile); string(b) != `{"host":true}` {
				t.Errorf("the host file was touched: %q", b)
			}
		})
	}
}

// The combined log (every stream by storage order) keeps the order the template wrote in, across streams.
func TestLogKeepsTheWritingOrderAcrossStreams(t *testing.T) {
	requireShell(t)
	a := newFakeAgent(t, nil)
	d := newRunDirs(t)
	// Pauses between writes, so each line is read before the next is written.
	r := startRunner(t, a, d, nil, "/bin/sh", "-c", `i=0; while [ $i -lt 40 ]; do echo "out $i"; sleep 0.02; echo "err $i hunter2" >&2; sleep 0.02; i=$((i+1)); done`)
	if code := r.wait(t); code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", code, r.stderr)
	}
	var want []string
	for i := 0; i < 40; i++ {
		want = append(want, fmt.Sprintf("out %d", i), fmt.Sprintf("err %d ***", i))
	}
	got := strings.Split(strings.TrimSuffix(a.combined(), "\n"), "\n")
	if len(got) != len(want) {
		t.Fatalf("%d lines: %q", len(got), got)
	}
	misplaced := 0
	for i := range want {
		if got[i] != want[i] {
			misplaced++
		}
	}
	// A loaded machine may read a pair out of order now and then; stream by stream, nearly all would be.
	if misplaced > 4 {
		t.Errorf("%d of %d lines out of writing order:\n%s", misplaced, len(want), strings.Join(got, "\n"))
	}
}
