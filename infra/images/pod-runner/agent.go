package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"
)

// Backoff between retries of a failed call: doubling from retryMin up to retryMax.
var (
	retryMin = 250 * time.Millisecond
	retryMax = 5 * time.Second
)

// agentClient calls the agent API (api/agent/routes.ts) with the run's credential.
type agentClient struct {
	base, runID, token string
	http               *http.Client

	noticeMu   sync.Mutex
	lastNotice time.Time
}

// unixHost names the agent in requests sent over a unix socket: HTTP needs a host, the socket is the address.
const unixHost = "http://agent"

// newAgentClient calls the agent at agentURL: http(s)://host[:port], or unix:///path/of/agent.sock for a
// socket (on a Docker node, the node worker's relay, which adds the run's credential itself). An empty
// token sends no Authorization header.
func newAgentClient(agentURL, runID, token string) *agentClient {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	dial := dialer.DialContext
	base := strings.TrimRight(agentURL, "/")
	if socket, ok := unixSocketPath(agentURL); ok {
		dial = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", socket)
		}
		base = unixHost
	}
	transport := &http.Transport{
		Proxy:                 nil, // the agent is reached directly, whatever proxy the template image configures
		DialContext:           dial,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       60 * time.Second,
		ResponseHeaderTimeout: 5 * time.Minute, // the state upload is answered once it is stored
		DisableCompression:    true,            // the archive is gzip itself: never unpacked on the way
	}
	return &agentClient{base: base, runID: runID, token: token, http: &http.Client{Transport: transport}}
}

// unixSocketPath gives the socket of a unix:///abs/path URL.
func unixSocketPath(agentURL string) (string, bool) {
	u, err := url.Parse(agentURL)
	if err != nil || u.Scheme != "unix" || u.Host != "" || !path.IsAbs(u.Path) || u.RawQuery != "" || u.Fragment != "" {
		return "", false
	}
	return u.Path, true
}

// callError is a failed call; retryable when the agent could not be reached or had a passing problem.
type callError struct {
	status    int // 0: no answer
	retryable bool
	msg       string
	stream    string // the log stream a refusal names (details.stream), if any
}

func (e *callError) Error() string { return e.msg }

func retryable(err error) bool {
	var ce *callError
	return errors.As(err, &ce) && ce.retryable
}

func (a *agentClient) endpoint(what string, query url.Values) string {
	u := a.base + "/v1/agent/runs/" + url.PathEscape(a.runID) + "/" + what
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	return u
}

// do sends one request. A response with a status in ok is returned open; any other ends as a callError.
func (a *agentClient) do(ctx context.Context, method, what string, query url.Values, contentType string, body io.Reader, ok ...int) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, a.endpoint(what, query), body)
	if err != nil {
		return nil, &callError{msg: err.Error()}
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := a.http.Do(req)
	if err != nil {
		// The caller's retry loop stops once its own context has ended.
		return nil, &callError{retryable: true, msg: fmt.Sprintf("%s %s: %v", method, what, unwrapURLError(err))}
	}
	for _, s := range ok {
		if res.StatusCode == s {
			return res, nil
		}
	}
	defer res.Body.Close()
	text, _ := io.ReadAll(io.LimitReader(res.Body, 8192))
	var problem struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		// LOG_OFFSET_MISMATCH: what the agent holds of each stream.
		StoredBytes map[string]int64 `json:"storedBytes"`
		Details     struct {
			Stream string `json:"stream"`
		} `json:"details"`
	}
	detail := strings.TrimSpace(string(text))
	if json.Unmarshal(text, &problem) == nil && problem.Message != "" {
		detail = problem.Message
	}
	if len(detail) > 300 {
		detail = detail[:300] + "…"
	}
	ce := &callError{
		status:    res.StatusCode,
		retryable: res.StatusCode >= 500 || res.StatusCode == http.StatusTooManyRequests || res.StatusCode == http.StatusRequestTimeout,
		msg:       fmt.Sprintf("%s %s: HTTP %d %s", method, what, res.StatusCode, detail),
		stream:    problem.Details.Stream,
	}
	if res.StatusCode == http.StatusConflict && problem.Code == "LOG_OFFSET_MISMATCH" && problem.StoredBytes != nil {
		return nil, &offsetMismatch{held: problem.StoredBytes, callError: ce}
	}
	return nil, ce
}

type offsetMismatch struct {
	held map[string]int64
	*callError
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// notice says that the agent is having trouble, at most every 30 s: a run's runner says little.
func (a *agentClient) notice(format string, args ...any) {
	a.noticeMu.Lock()
	defer a.noticeMu.Unlock()
	if time.Since(a.lastNotice) < 30*time.Second {
		return
	}
	a.lastNotice = time.Now()
	say(format, args...)
}

// retry runs attempt until it succeeds, fails for good, ctx ends or limit has passed, waiting more and
// more between tries. stop, when it returns true, ends the retries early.
func (a *agentClient) retry(ctx context.Context, what string, limit time.Duration, stop func() bool, attempt func() error) error {
	deadline := time.Now().Add(limit)
	limit = limit.Round(time.Second)
	wait := retryMin
	for {
		err := attempt()
		if err == nil || !retryable(err) {
			return err
		}
		if time.Now().Add(wait).After(deadline) || (stop != nil && stop()) || ctx.Err() != nil {
			return fmt.Errorf("%w (gave up after %s)", err, limit)
		}
		if limit < 24*time.Hour {
			a.notice("%s: %v; retrying for up to %s", what, err, limit)
		} else {
			a.notice("%s: %v; retrying", what, err)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
		wait = min(wait*2, retryMax)
	}
}

// getState opens the archive to restore; nil when there is none (204).
func (a *agentClient) getState(ctx context.Context) (io.ReadCloser, error) {
	res, err := a.do(ctx, http.MethodGet, "state", nil, "", nil, http.StatusOK, http.StatusNoContent)
	if err != nil {
		return nil, err
	}
	if res.StatusCode == http.StatusNoContent {
		res.Body.Close()
		return nil, nil
	}
	return res.Body, nil
}

// getTemplate opens the archive of an ad-hoc template's files.
func (a *agentClient) getTemplate(ctx context.Context) (io.ReadCloser, error) {
	res, err := a.do(ctx, http.MethodGet, "template", nil, "", nil, http.StatusOK)
	if err != nil {
		return nil, err
	}
	return res.Body, nil
}

// putFrames stores frames in their order, in one call: retried while the agent cannot be reached or has
// a passing problem, until it is stored, the agent says where each stream stands (409: the caller resends
// from there), the frames are refused for good, or ctx ends.
func (a *agentClient) putFrames(ctx context.Context, frames []logFrame) framesResult {
	body := encodeFrames(frames)
	var res framesResult
	err := a.retry(ctx, "storing the log", 365*24*time.Hour, nil, func() error {
		attemptCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		answer, err := a.do(attemptCtx, http.MethodPost, "log-frames", nil, logFramesType, bytes.NewReader(body), http.StatusNoContent, http.StatusOK)
		var mismatch *offsetMismatch
		switch {
		case errors.As(err, &mismatch):
			res.held = mismatch.held
			return nil
		case err != nil:
			return err
		}
		answer.Body.Close()
		res.stored = true
		return nil
	})
	if err != nil && ctx.Err() == nil {
		var ce *callError
		errors.As(err, &ce)
		res.fatal = err
		if ce != nil {
			res.stream = ce.stream
		}
	}
	return res
}

// stateVersion is the agent's answer to a stored archive.
type stateVersion struct {
	Version   int    `json:"version"`
	Sha256    string `json:"sha256"`
	SizeBytes int64  `json:"sizeBytes"`
}

// packError is a failure to read /state, which a retry would not fix.
type packError struct{ err error }

func (e *packError) Error() string { return e.err.Error() }
func (e *packError) Unwrap() error { return e.err }

// sendWriter tells a failure to send (the upload stopped reading) from a failure to pack.
type sendWriter struct {
	w      io.Writer
	failed bool
}

func (s *sendWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err != nil {
		s.failed = true
	}
	return n, err
}

// putState streams a fresh archive from pack for every attempt, never holding it whole.
func (a *agentClient) putState(ctx context.Context, limit time.Duration, pack func(io.Writer) error) (stateVersion, error) {
	var answer stateVersion
	err := a.retry(ctx, "storing the state archive", limit, nil, func() error {
		reader, writer := io.Pipe()
		packed := make(chan error, 1)
		go func() {
			out := &sendWriter{w: writer}
			err := pack(out)
			if err != nil && !out.failed {
				err = &packError{err}
			}
			writer.CloseWithError(err)
			packed <- err
		}()
		res, err := a.do(ctx, http.MethodPut, "state", nil, "application/gzip", reader, http.StatusOK, http.StatusCreated)
		reader.CloseWithError(errors.New("the upload ended")) // unblocks pack if the request stopped reading
		var pe *packError
		if errors.As(<-packed, &pe) {
			if res != nil {
				res.Body.Close()
			}
			return pe
		}
		if err != nil {
			return err
		}
		defer res.Body.Close()
		if err := json.NewDecoder(io.LimitReader(res.Body, 65536)).Decode(&answer); err != nil || answer.Version < 1 {
			return &callError{msg: fmt.Sprintf("PUT state: unexpected answer (%v)", err)}
		}
		return nil
	})
	return answer, err
}

// postResult reports the run's result.
func (a *agentClient) postResult(ctx context.Context, limit time.Duration, body []byte) error {
	return a.retry(ctx, "reporting the result", limit, nil, func() error {
		attemptCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		res, err := a.do(attemptCtx, http.MethodPost, "result", nil, "application/json", bytes.NewReader(body), http.StatusNoContent, http.StatusOK)
		if err != nil {
			return err
		}
		res.Body.Close()
		return nil
	})
}
