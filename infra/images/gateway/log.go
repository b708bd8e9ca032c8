package main

import (
	"encoding/json"
	"io"
	"os"
	"sync"
)

var (
	logMu  sync.Mutex
	logOut io.Writer = os.Stdout // tests read it
)

// logLine prints one JSON object on stdout: the dev stack and the tests parse every line the gateway prints.
func logLine(msg string, fields map[string]any) {
	line := map[string]any{"msg": msg}
	for k, v := range fields {
		line[k] = v
	}
	b, err := json.Marshal(line)
	if err != nil {
		return
	}
	logMu.Lock()
	defer logMu.Unlock()
	_, _ = logOut.Write(append(b, '\n'))
}

// logRefused is the one line every refusal prints, on gRPC and HTTPS alike.
func logRefused(node, method, reason string) {
	logLine("refused", map[string]any{"node": node, "method": method, "reason": reason})
}
