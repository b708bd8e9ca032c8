package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	ws "go.temporal.io/api/workflowservice/v1"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/encoding/gzip" // the TypeScript SDK 1.24 compresses with gzip: without it DescribeNamespace fails
)

// shutdownGrace is how long a SIGTERM waits for calls in flight (a response, a heartbeat, a state upload)
// before cutting what is left, long polls included.
const shutdownGrace = 15 * time.Second

// server is the one TLS listener, carrying gRPC (to Temporal) and HTTPS (to the node API).
type server struct {
	http     *http.Server
	grpc     *grpc.Server
	upstream interface{ Close() error }
	listener net.Listener
}

func serverTLS(cfg *config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.tlsCert, cfg.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("GATEWAY_TLS_CERT/GATEWAY_TLS_KEY: %w", err)
	}
	caPEM, err := os.ReadFile(cfg.clientCA)
	if err != nil {
		return nil, fmt.Errorf("GATEWAY_CLIENT_CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("GATEWAY_CLIENT_CA holds no PEM certificate")
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		// Asked for, not required, at the handshake: enrolment comes without one. Every other call needs one.
		ClientAuth: tls.VerifyClientCertIfGiven,
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
	}, nil
}

// newServer dispatches on content-type on the one listener: gRPC goes to grpc.Server through ServeHTTP, so
// one Go HTTP/2 server (which answers the SDK's 30 s keepalive pings without ever counting them as abuse, unlike
// grpc-go's own transport's default enforcement) carries both.
func newServer(cfg *config) (*server, error) {
	tlsConfig, err := serverTLS(cfg)
	if err != nil {
		return nil, err
	}
	g := newGateway(cfg)
	temporal, upstream, err := newTemporalProxy(cfg.temporalAddress)
	if err != nil {
		return nil, err
	}
	grpcServer := grpc.NewServer(
		grpc.UnaryInterceptor(g.unary),
		grpc.StreamInterceptor(g.stream),
		grpc.UnknownServiceHandler(unknownService),
		grpc.MaxRecvMsgSize(maxMessageBytes),
		grpc.MaxSendMsgSize(maxMessageBytes),
	)
	ws.RegisterWorkflowServiceServer(grpcServer, temporal)
	nodeAPI, err := newNodeAPI(g, cfg.apiURL, cfg.apiSecret)
	if err != nil {
		upstream.Close()
		return nil, err
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			grpcServer.ServeHTTP(w, r)
			return
		}
		nodeAPI.ServeHTTP(w, r)
	})
	httpServer := &http.Server{
		Handler:           handler,
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 10 * time.Second,
		// No read or write timeout: long polls last 70 s and state archives stream for minutes. A connection
		// without a stream for this long is closed (a worker always has a poll open).
		IdleTimeout: 5 * time.Minute,
		// A node that vanished (no FIN) is noticed by pings, and its polls' slots are given back.
		HTTP2:    &http.HTTP2Config{SendPingTimeout: time.Minute, PingTimeout: 20 * time.Second, MaxReceiveBufferPerStream: 4 << 20},
		ErrorLog: log.New(jsonLogWriter{}, "", 0),
		// One line per connection opened and closed: a worker that keeps reconnecting shows here.
		ConnState: func(c net.Conn, state http.ConnState) {
			switch state {
			case http.StateNew:
				logLine("connected", map[string]any{"remote": c.RemoteAddr().String()})
			case http.StateClosed, http.StateHijacked:
				logLine("disconnected", map[string]any{"remote": c.RemoteAddr().String()})
			}
		},
	}
	listener, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		upstream.Close()
		return nil, err
	}
	return &server{http: httpServer, grpc: grpcServer, upstream: upstream, listener: listener}, nil
}

func (s *server) serve() error {
	err := s.http.ServeTLS(s.listener, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// stop is the SIGTERM path. The HTTP server's Shutdown is the graceful part: it stops accepting, sends GOAWAY
// and waits for the calls in flight. grpc.Server.GracefulStop cannot help here: on ServeHTTP transports it
// cancels every call at once (their Drain is a Close), so after the grace only Stop is left for what remains.
func (s *server) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := s.http.Shutdown(ctx); err != nil {
		logLine("stopping", map[string]any{"reason": "grace over: cutting the calls still open"})
		s.grpc.Stop()
		_ = s.http.Close()
	}
	s.grpc.Stop()
	_ = s.upstream.Close()
}

// jsonLogWriter turns net/http's own log lines (TLS handshake errors, …) into JSON lines like every other.
type jsonLogWriter struct{}

func (jsonLogWriter) Write(p []byte) (int, error) {
	logLine("http", map[string]any{"reason": strings.TrimSpace(string(p))})
	return len(p), nil
}
