package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	ws "go.temporal.io/api/workflowservice/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
)

// testPKI is a node CA, the gateway's server certificate and node certificates, made in memory.
type testPKI struct {
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caPEM  []byte
}

func newTestPKI(t *testing.T, name string) *testPKI {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	cert, _ := x509.ParseCertificate(der)
	return &testPKI{caCert: cert, caKey: key, caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (p *testPKI) issue(t *testing.T, tmpl *x509.Certificate) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl.SerialNumber = serial
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	must(t, err)
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func (p *testPKI) node(t *testing.T, id string) tls.Certificate {
	u, _ := url.Parse(nodeURIPrefix + id)
	return p.issue(t, &x509.Certificate{URIs: []*url.URL{u}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// fakeTemporal is the upstream: it records what reaches it and answers as a test sets it up.
type fakeTemporal struct {
	ws.UnimplementedWorkflowServiceServer
	mu       sync.Mutex
	requests map[string][]any
	headers  []metadata.MD
	answer   map[string]func(ctx context.Context, req any) (any, error)
}

func (f *fakeTemporal) record(ctx context.Context, method string, req any) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	f.requests[method] = append(f.requests[method], req)
	f.headers = append(f.headers, md)
	answer := f.answer[method]
	f.mu.Unlock()
	if answer != nil {
		return answer(ctx, req)
	}
	return nil, nil
}

func (f *fakeTemporal) last(method string) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r := f.requests[method]; len(r) > 0 {
		return r[len(r)-1]
	}
	return nil
}

func (f *fakeTemporal) calls(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests[method])
}

func answerAs[T any](f *fakeTemporal, ctx context.Context, method string, req any) (*T, error) {
	resp, err := f.record(ctx, method, req)
	if resp == nil {
		return new(T), err
	}
	return resp.(*T), err
}

func (f *fakeTemporal) GetSystemInfo(ctx context.Context, r *ws.GetSystemInfoRequest) (*ws.GetSystemInfoResponse, error) {
	return answerAs[ws.GetSystemInfoResponse](f, ctx, "GetSystemInfo", r)
}
func (f *fakeTemporal) DescribeNamespace(ctx context.Context, r *ws.DescribeNamespaceRequest) (*ws.DescribeNamespaceResponse, error) {
	return answerAs[ws.DescribeNamespaceResponse](f, ctx, "DescribeNamespace", r)
}
func (f *fakeTemporal) PollActivityTaskQueue(ctx context.Context, r *ws.PollActivityTaskQueueRequest) (*ws.PollActivityTaskQueueResponse, error) {
	return answerAs[ws.PollActivityTaskQueueResponse](f, ctx, "PollActivityTaskQueue", r)
}
func (f *fakeTemporal) RecordActivityTaskHeartbeat(ctx context.Context, r *ws.RecordActivityTaskHeartbeatRequest) (*ws.RecordActivityTaskHeartbeatResponse, error) {
	return answerAs[ws.RecordActivityTaskHeartbeatResponse](f, ctx, "RecordActivityTaskHeartbeat", r)
}
func (f *fakeTemporal) RespondActivityTaskCompleted(ctx context.Context, r *ws.RespondActivityTaskCompletedRequest) (*ws.RespondActivityTaskCompletedResponse, error) {
	return answerAs[ws.RespondActivityTaskCompletedResponse](f, ctx, "RespondActivityTaskCompleted", r)
}
func (f *fakeTemporal) RespondActivityTaskFailed(ctx context.Context, r *ws.RespondActivityTaskFailedRequest) (*ws.RespondActivityTaskFailedResponse, error) {
	return answerAs[ws.RespondActivityTaskFailedResponse](f, ctx, "RespondActivityTaskFailed", r)
}
func (f *fakeTemporal) RespondActivityTaskCanceled(ctx context.Context, r *ws.RespondActivityTaskCanceledRequest) (*ws.RespondActivityTaskCanceledResponse, error) {
	return answerAs[ws.RespondActivityTaskCanceledResponse](f, ctx, "RespondActivityTaskCanceled", r)
}
func (f *fakeTemporal) ShutdownWorker(ctx context.Context, r *ws.ShutdownWorkerRequest) (*ws.ShutdownWorkerResponse, error) {
	return answerAs[ws.ShutdownWorkerResponse](f, ctx, "ShutdownWorker", r)
}
func (f *fakeTemporal) StartWorkflowExecution(ctx context.Context, r *ws.StartWorkflowExecutionRequest) (*ws.StartWorkflowExecutionResponse, error) {
	return answerAs[ws.StartWorkflowExecutionResponse](f, ctx, "StartWorkflowExecution", r)
}

// fakeAPI answers the gateway's node lookups from a map (no entry: 404; "down": 500) and records the node
// API calls passed to it.
type fakeAPI struct {
	mu       sync.Mutex
	statuses map[string]string
	lookups  int
	calls    []*http.Request
	handler  http.HandlerFunc // the node API's answer; 200 {} if nil
}

func (a *fakeAPI) setStatus(node, status string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.statuses[node] = status
}

func (a *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if id, ok := strings.CutPrefix(r.URL.Path, "/v1/gateway/nodes/"); ok {
		a.mu.Lock()
		a.lookups++
		status, known := a.statuses[id]
		a.mu.Unlock()
		switch {
		case r.Header.Get("X-Glider-Gateway") != testSecret:
			http.Error(w, "no", http.StatusUnauthorized)
		case !known:
			http.NotFound(w, r)
		case status == "down":
			http.Error(w, "down", http.StatusInternalServerError)
		default:
			_ = json.NewEncoder(w).Encode(map[string]string{"id": id, "status": status})
		}
		return
	}
	a.mu.Lock()
	a.calls = append(a.calls, r.Clone(context.Background()))
	handler := a.handler
	a.mu.Unlock()
	if handler != nil {
		handler(w, r)
		return
	}
	_, _ = w.Write([]byte("{}"))
}

const testSecret = "gateway-secret"

// testGateway is a gateway on loopback in front of a fakeTemporal and a fakeAPI.
type testGateway struct {
	addr     string
	pki      *testPKI
	temporal *fakeTemporal
	api      *fakeAPI
	keys     *tokenKeys
}

func startTestGateway(t *testing.T, adjust func(*config)) *testGateway {
	t.Helper()
	dir := t.TempDir()
	pki := newTestPKI(t, "node CA")
	server := pki.issue(t, &x509.Certificate{IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	write := func(name string, blocks ...*pem.Block) string {
		var b []byte
		for _, block := range blocks {
			b = append(b, pem.EncodeToMemory(block)...)
		}
		p := filepath.Join(dir, name)
		must(t, os.WriteFile(p, b, 0o600))
		return p
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(server.PrivateKey)

	temporal := &fakeTemporal{requests: map[string][]any{}, answer: map[string]func(context.Context, any) (any, error){}}
	upstreamListener, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	upstream := grpc.NewServer()
	ws.RegisterWorkflowServiceServer(upstream, temporal)
	go func() { _ = upstream.Serve(upstreamListener) }()
	t.Cleanup(upstream.Stop)

	api := &fakeAPI{statuses: map[string]string{"a": "active", "b": "active"}}
	apiServer := httptest.NewServer(api)
	t.Cleanup(apiServer.Close)

	keys := mustKeys(t, keyLine(1, 1))
	cfg := &config{
		listen:          "127.0.0.1:0",
		tlsCert:         write("server.pem", &pem.Block{Type: "CERTIFICATE", Bytes: server.Certificate[0]}),
		tlsKey:          write("server.key", &pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		clientCA:        write("ca.pem", &pem.Block{Type: "CERTIFICATE", Bytes: pki.caCert.Raw}),
		temporalAddress: upstreamListener.Addr().String(),
		namespace:       "default",
		apiURL:          apiServer.URL,
		apiSecret:       testSecret,
		keys:            keys,
		nodeRPS:         1000,
		nodeBurst:       1000,
		nodeMaxPolls:    8,
	}
	if adjust != nil {
		adjust(cfg)
	}
	s, err := newServer(cfg)
	must(t, err)
	go func() { _ = s.serve() }()
	t.Cleanup(s.stop)
	return &testGateway{addr: s.listener.Addr().String(), pki: pki, temporal: temporal, api: api, keys: cfg.keys}
}

func (g *testGateway) clientTLS(certs ...tls.Certificate) *tls.Config {
	roots := x509.NewCertPool()
	roots.AddCert(g.pki.caCert)
	return &tls.Config{RootCAs: roots, ServerName: "127.0.0.1",
		// Sent whatever CA the gateway asks for: Go's client would otherwise keep back one of another CA.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if len(certs) == 0 {
				return &tls.Certificate{}, nil
			}
			return &certs[0], nil
		}}
}

// grpcClient dials the gateway as a node with these certificates (none: no client certificate).
func (g *testGateway) grpcClient(t *testing.T, certs ...tls.Certificate) ws.WorkflowServiceClient {
	return ws.NewWorkflowServiceClient(g.grpcConn(t, certs...))
}

func (g *testGateway) grpcConn(t *testing.T, certs ...tls.Certificate) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(g.addr, grpc.WithTransportCredentials(credentials.NewTLS(g.clientTLS(certs...))))
	must(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

// httpClient calls the gateway's HTTPS side as a node (HTTP/1.1 unless h2 is asked for).
func (g *testGateway) httpClient(t *testing.T, h2 bool, certs ...tls.Certificate) *http.Client {
	transport := &http.Transport{TLSClientConfig: g.clientTLS(certs...), ForceAttemptHTTP2: h2}
	t.Cleanup(transport.CloseIdleConnections) // before the gateway stops, which would wait for them
	return &http.Client{Transport: transport}
}

// captureLog collects what the gateway prints while a test runs (tests using it must not run in parallel).
func captureLog(t *testing.T) func() []map[string]any {
	var mu sync.Mutex
	var buf strings.Builder
	logMu.Lock()
	old := logOut
	logOut = writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	})
	logMu.Unlock()
	t.Cleanup(func() {
		logMu.Lock()
		logOut = old
		logMu.Unlock()
	})
	return func() []map[string]any {
		mu.Lock()
		defer mu.Unlock()
		var lines []map[string]any
		for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			var m map[string]any
			if line != "" && json.Unmarshal([]byte(line), &m) == nil {
				lines = append(lines, m)
			}
		}
		return lines
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
