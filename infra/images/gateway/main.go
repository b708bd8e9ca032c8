// Command gateway is the one address remote nodes dial (docs/remote-nodes.md): it terminates their mTLS, takes
// each node's identity from its client certificate, and passes on only what that node may do: its own
// activity tasks on Temporal (gRPC) and its own calls on the node API (HTTPS), on one TLS listener.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	cfg, err := loadConfig(os.Getenv)
	if err != nil {
		logLine("config", map[string]any{"reason": err.Error()})
		os.Exit(2)
	}
	s, err := newServer(cfg)
	if err != nil {
		logLine("start", map[string]any{"reason": err.Error()})
		os.Exit(1)
	}
	logLine("listening", map[string]any{"address": s.listener.Addr().String()})
	stopped := make(chan struct{})
	go func() {
		signals := make(chan os.Signal, 1)
		signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
		<-signals
		logLine("stopping", nil)
		s.stop()
		close(stopped)
	}()
	if err := s.serve(); err != nil {
		logLine("serve", map[string]any{"reason": err.Error()})
		os.Exit(1)
	}
	<-stopped
	logLine("stopped", nil)
}
