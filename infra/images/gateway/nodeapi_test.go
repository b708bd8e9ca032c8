package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func call(t *testing.T, client *http.Client, method, url string, header http.Header) (*http.Response, apiError) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader("{}"))
	must(t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	res, err := client.Do(req)
	must(t, err)
	defer res.Body.Close()
	var e apiError
	body, _ := io.ReadAll(res.Body)
	_ = json.Unmarshal(body, &e)
	return res, e
}

func TestNodeAPIHeadersComeFromTheGatewayOnly(t *testing.T) {
	g := startTestGateway(t, nil)
	base := "https://" + g.addr
	for _, h2 := range []bool{false, true} {
		client := g.httpClient(t, h2, g.pki.node(t, "a"))
		header := http.Header{
			"X-Glider-Node":    {"b"},
			"X-Glider-Gateway": {"guessed"},
			"X-Glider-Other":   {"x"},
			"Forwarded":        {"for=10.0.0.1"},
			"X-Forwarded-For":  {"10.0.0.1"},
			"Authorization":    {"Bearer run-credential"},
		}
		if !h2 {
			// On HTTP/1.1 a client may name headers hop-by-hop: that must not strip the gateway's own.
			header["Connection"] = []string{"X-Glider-Node, X-Glider-Gateway"}
		}
		res, _ := call(t, client, http.MethodPost, base+"/v1/node/heartbeat", header)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("h2=%v: status %d", h2, res.StatusCode)
		}
		got := g.api.calls[len(g.api.calls)-1]
		if got.Header.Get("X-Glider-Node") != "a" || got.Header.Get("X-Glider-Gateway") != testSecret || got.Header.Get("X-Glider-Other") != "" ||
			got.Header.Get("Forwarded") != "" || got.Header.Get("X-Forwarded-For") != "" || len(got.Header.Values("X-Glider-Node")) != 1 {
			t.Fatalf("h2=%v: the API got %v", h2, got.Header)
		}
		if got.Header.Get("Authorization") != "Bearer run-credential" || got.URL.Path != "/v1/node/heartbeat" || got.Method != http.MethodPost {
			t.Fatalf("h2=%v: the call was changed: %s %s %v", h2, got.Method, got.URL, got.Header)
		}
	}
}

func TestNodeAPIRoutes(t *testing.T) {
	g := startTestGateway(t, nil)
	base := "https://" + g.addr
	anonymous := g.httpClient(t, true)
	a := g.httpClient(t, true, g.pki.node(t, "a"))

	res, _ := call(t, anonymous, http.MethodPost, base+"/v1/node/enrol", http.Header{"X-Glider-Node": {"a"}})
	if res.StatusCode != http.StatusOK {
		t.Fatalf("enrol: %d", res.StatusCode)
	}
	if got := g.api.calls[len(g.api.calls)-1]; got.Header.Get("X-Glider-Node") != "" || got.URL.Path != "/v1/node/enrol" {
		t.Fatalf("enrol reached the API as %s with node %q", got.URL.Path, got.Header.Get("X-Glider-Node"))
	}
	calls := len(g.api.calls)

	for _, c := range []struct {
		client       *http.Client
		method, path string
		status       int
		code         string
	}{
		{anonymous, "GET", "/v1/node/runs/r1", 401, "NODE_CERTIFICATE_REQUIRED"},
		{anonymous, "POST", "/v1/agent/runs/r1/logs", 401, "NODE_CERTIFICATE_REQUIRED"},
		{anonymous, "GET", "/v1/node/enrol", 401, "NODE_CERTIFICATE_REQUIRED"},
		{a, "GET", "/v1/deployments", 404, "NOT_FOUND"},
		{a, "GET", "/v1/gateway/nodes/a", 404, "NOT_FOUND"},
		{a, "GET", "/v1/node/../deployments", 404, "NOT_FOUND"},
		{a, "GET", "/v1/node/runs/%2e%2e/%2e%2e/deployments", 404, "NOT_FOUND"},
		{a, "GET", "/v1/node/runs/x%2F..%2F..%2F..%2Fdeployments", 404, "NOT_FOUND"},
		{a, "GET", "/v1/nodes", 404, "NOT_FOUND"},
	} {
		res, e := call(t, c.client, c.method, base+c.path, nil)
		if res.StatusCode != c.status || e.Code != c.code || e.Message == "" {
			t.Errorf("%s %s: %d %+v, want %d %s", c.method, c.path, res.StatusCode, e, c.status, c.code)
		}
	}
	if len(g.api.calls) != calls {
		t.Fatalf("a refused call reached the API: %s", g.api.calls[len(g.api.calls)-1].URL)
	}

	g.api.setStatus("a", "revoked")
	if res, e := call(t, a, "GET", base+"/v1/node/runs/r1", nil); res.StatusCode != 403 || e.Code != "NODE_REVOKED" {
		t.Errorf("revoked: %d %+v", res.StatusCode, e)
	}
	if res, e := call(t, g.httpClient(t, true, g.pki.node(t, "c")), "GET", base+"/v1/node/runs/r1", nil); res.StatusCode != 403 || e.Code != "NODE_UNKNOWN" {
		t.Errorf("unknown: %d %+v", res.StatusCode, e)
	}
	g.api.setStatus("a", "down")
	if res, e := call(t, a, "GET", base+"/v1/node/runs/r1", nil); res.StatusCode != 503 || e.Code != "API_UNREACHABLE" {
		t.Errorf("API down: %d %+v", res.StatusCode, e)
	}
}

func TestNodeAPIRateLimit(t *testing.T) {
	g := startTestGateway(t, func(c *config) { c.nodeRPS, c.nodeBurst = 0.001, 1 })
	a := g.httpClient(t, true, g.pki.node(t, "a"))
	call(t, a, "GET", "https://"+g.addr+"/v1/node/runs/r1", nil)
	if res, e := call(t, a, "GET", "https://"+g.addr+"/v1/node/runs/r1", nil); res.StatusCode != 429 || e.Code != "RATE_LIMITED" {
		t.Errorf("over the limit: %d %+v", res.StatusCode, e)
	}
}

// A state archive is gigabytes: the answer must reach the node while the API is still writing it, and the
// upload must reach the API while the node is still sending it.
func TestNodeAPIStreamsBothWays(t *testing.T) {
	g := startTestGateway(t, nil)
	firstChunk := make(chan string, 1)
	finish := make(chan struct{})
	g.api.handler = func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).EnableFullDuplex() // Go's HTTP/1 server is half duplex by default
		line, _ := bufio.NewReader(r.Body).ReadString('\n')
		firstChunk <- line
		_, _ = w.Write([]byte("part one\n"))
		w.(http.Flusher).Flush()
		<-finish
		_, _ = w.Write([]byte("part two\n"))
	}
	body, upload := io.Pipe()
	req, _ := http.NewRequest(http.MethodPut, "https://"+g.addr+"/v1/agent/runs/r1/state", body)
	resCh := make(chan *http.Response, 1)
	go func() {
		res, err := g.httpClient(t, true, g.pki.node(t, "a")).Do(req)
		if err != nil {
			t.Error(err)
			close(resCh)
			return
		}
		resCh <- res
	}()
	_, _ = upload.Write([]byte("first line of the upload\n"))
	select {
	case line := <-firstChunk:
		if line != "first line of the upload\n" {
			t.Fatalf("the API read %q", line)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the upload was held back by the gateway")
	}
	res := <-resCh
	if res == nil {
		return
	}
	defer res.Body.Close()
	line, _ := bufio.NewReader(res.Body).ReadString('\n')
	if line != "part one\n" {
		t.Fatalf("the node read %q", line)
	}
	close(finish)
	upload.Close()
}
