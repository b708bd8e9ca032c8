package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func shortRetries(t *testing.T) {
	oldMin, oldMax, oldRestore := retryMin, retryMax, restoreRetryFor
	retryMin, retryMax, restoreRetryFor = 10*time.Millisecond, 50*time.Millisecond, 2*time.Second
	t.Cleanup(func() { retryMin, retryMax, restoreRetryFor = oldMin, oldMax, oldRestore })
}

func testRunner(t *testing.T, url string) *runner {
	return &runner{cfg: &config{stateDir: t.TempDir()}, agent: newAgentClient(url, "run-1", testToken), stopping: make(chan struct{})}
}

func TestRestoreRetriesUntilTheAgentAnswers(t *testing.T) {
	shortRetries(t)
	archive := archiveOf(t, map[string]string{"kept": strings.Repeat("k", 300_000)}, nil)
	var mu sync.Mutex
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		switch n {
		case 1: // no answer at all
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
		case 2:
			http.Error(w, "starting", http.StatusServiceUnavailable)
		case 3: // cut in the middle of the download
			w.Header().Set("Content-Length", strconv.Itoa(len(archive)))
			_, _ = w.Write(archive[:len(archive)/2])
			w.(http.Flusher).Flush()
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
		default:
			_, _ = w.Write(archive)
		}
	}))
	defer srv.Close()
	r := testRunner(t, srv.URL)
	if err := r.restore(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(r.cfg.stateDir, "kept")); len(b) != 300_000 {
		t.Errorf("restored %d bytes", len(b))
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 4 {
		t.Errorf("%d calls", calls)
	}
}

func TestRestoreGivesUpWhenTheAgentStaysAway(t *testing.T) {
	shortRetries(t)
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	url := "http://" + listener.Addr().String()
	listener.Close()
	started := time.Now()
	err = testRunner(t, url).restore()
	if err == nil || !strings.Contains(err.Error(), "gave up after 2s") {
		t.Errorf("err %v", err)
	}
	if time.Since(started) > 4*time.Second {
		t.Errorf("took %s", time.Since(started))
	}
}

func TestLogsSurviveAnAgentOutage(t *testing.T) {
	shortRetries(t)
	var mu sync.Mutex
	stored := map[string][]byte{}
	failures := 5
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if failures > 0 {
			failures--
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		body, _ := io.ReadAll(r.Body)
		frames, err := decodeFrames(body)
		if err != nil || r.URL.Path != "/v1/agent/runs/run-1/log-frames" {
			http.Error(w, fmt.Sprint(err), http.StatusBadRequest)
			return
		}
		for _, f := range frames {
			stored[f.stream] = append(stored[f.stream][:f.offset], f.data...)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	oldMax := maxUnacknowledged
	maxUnacknowledged = 4096 // the source has to wait for the agent
	t.Cleanup(func() { maxUnacknowledged = oldMax })
	c := NewLogCollector(newAgentClient(srv.URL, "run-1", testToken), []string{"hunter2"}, 0, nil)
	var want bytes.Buffer
	for i := 0; i < 2000; i++ {
		line := []byte("line " + strconv.Itoa(i) + " hunter2 " + strings.Repeat(".", i%300) + "\n")
		c.Entry("stdout", line)
		want.Write(bytes.ReplaceAll(line, []byte("hunter2"), []byte("***")))
	}
	if warnings := c.End(10 * time.Second); len(warnings) > 0 {
		t.Fatal(warnings)
	}
	mu.Lock()
	defer mu.Unlock()
	if !bytes.Equal(stored["stdout"], want.Bytes()) {
		t.Errorf("stored %d bytes, want %d", len(stored["stdout"]), want.Len())
	}
}

func TestLogEndIsBoundedAndWarns(t *testing.T) {
	shortRetries(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	c := NewLogCollector(newAgentClient(srv.URL, "run-1", testToken), nil, 0, nil)
	c.Entry("stdout", []byte("never stored\n"))
	started := time.Now()
	warnings := c.End(300 * time.Millisecond)
	if time.Since(started) > 2*time.Second {
		t.Errorf("End took %s", time.Since(started))
	}
	if len(warnings) != 1 || warnings[0] != "log stream stdout: only 0 of 13 bytes were stored within 300ms" {
		t.Errorf("warnings %q", warnings)
	}
}

func TestLogRefusedForGoodIsAWarning(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		_, _ = w.Write([]byte(`{"code":"PAYLOAD_TOO_LARGE","message":"over the cap"}`))
	}))
	defer srv.Close()
	c := NewLogCollector(newAgentClient(srv.URL, "run-1", testToken), nil, 0, nil)
	c.Entry("stderr", []byte("x"))
	warnings := c.End(5 * time.Second)
	if len(warnings) != 1 || !strings.Contains(warnings[0], "HTTP 413 over the cap") {
		t.Errorf("warnings %q", warnings)
	}
}

func TestPutStateDoesNotRetryAPackFailure(t *testing.T) {
	shortRetries(t)
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		http.Error(w, "bad", http.StatusBadRequest)
	}))
	defer srv.Close()
	a := newAgentClient(srv.URL, "run-1", testToken)
	_, err := a.putState(context.Background(), time.Second, func(w io.Writer) error {
		_, _ = w.Write([]byte("partial"))
		return os.ErrPermission
	})
	if err == nil || !strings.Contains(err.Error(), "permission denied") || calls.Load() > 1 {
		t.Errorf("err %v after %d calls", err, calls.Load())
	}
}

// shortSocket is a path for a unix socket: t.TempDir's can pass the 108 bytes a socket path may have.
func shortSocket(t *testing.T) string {
	dir, err := os.MkdirTemp("", "gg-agent-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "agent.sock")
}

// On a Docker node the runner reaches the agent through the node worker's relay on a unix socket, which
// adds the run's credential: the runner has none to send.
func TestRunOverAUnixSocketWithoutCredential(t *testing.T) {
	requireShell(t)
	a := newFakeAgent(t, func(a *fakeAgent) {
		a.socket = shortSocket(t)
		a.noAuth = true
		a.restore = archiveOf(t, map[string]string{"kept": "k"}, nil)
	})
	d := newRunDirs(t)
	must(t, os.Remove(filepath.Join(d.runner, "credential")))
	r := startRunner(t, a, d, []string{"GG_RESTORE=1"}, "/bin/sh", "-c", `cat "$STATE/kept"; echo " restored"; echo oops >&2; exit 4`)
	if code := r.wait(t); code != 4 {
		t.Fatalf("exit code %d; stderr:\n%s", code, r.stderr)
	}
	if got := a.log("stdout"); got != "k restored\n" {
		t.Errorf("stdout %q", got)
	}
	if got := a.log("stderr"); got != "oops\n" {
		t.Errorf("stderr %q", got)
	}
	results, archives, _ := a.reported()
	if len(results) != 1 || results[0]["exitCode"] != 4.0 || results[0]["stateVersion"] != 7.0 || len(archives) != 1 {
		t.Errorf("results %v, %d archives", results, len(archives))
	}
}

func TestAgentURLAndCredential(t *testing.T) {
	socket := shortSocket(t)
	for _, c := range []struct {
		url        string
		credential string // "": no file
		want       string // the error, or "token=<credential sent>"
	}{
		{"unix://" + socket, "", "token="},
		{"unix://" + socket, "ggr_x\n", "token=ggr_x"},
		{"http://agent:8080", "", "reading the credential: open "},
		{"http://agent:8080", "ggr_y", "token=ggr_y"},
		{"unix://relative/agent.sock", "ggr_x", `GG_AGENT_URL must be an http(s) URL or unix:///<absolute path of a socket>, not "unix://relative/agent.sock"`},
		{"unix:agent.sock", "ggr_x", "GG_AGENT_URL must be"},
		{"ftp://agent", "ggr_x", "GG_AGENT_URL must be"},
	} {
		dir := t.TempDir()
		if c.credential != "" {
			must(t, os.WriteFile(filepath.Join(dir, "credential"), []byte(c.credential), 0o600))
		}
		t.Setenv("GG_AGENT_URL", c.url)
		t.Setenv("GG_RUN_ID", "run-1")
		t.Setenv("GG_RUNNER_DIR", dir)
		cfg, err := loadConfig()
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			got = "token=" + cfg.credential
		}
		if !strings.HasPrefix(got, c.want) {
			t.Errorf("%s with credential %q: %s, want %s", c.url, c.credential, got, c.want)
		}
	}
}
