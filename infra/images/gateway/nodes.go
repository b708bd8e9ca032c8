package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

var (
	errNodeRevoked    = errors.New("the node is revoked")
	errNodeUnknown    = errors.New("the node is unknown")
	errAPIUnreachable = errors.New("the API cannot be reached")
)

// nodeDirectory asks the API whether a node may act. It is asked on every call, gRPC and HTTPS, and never
// cached: connections live for days, and a revoked node must stop at its next call. Any doubt refuses.
type nodeDirectory struct {
	apiURL, secret string
	http           *http.Client
}

func newNodeDirectory(apiURL, secret string) *nodeDirectory {
	return &nodeDirectory{apiURL: apiURL, secret: secret, http: &http.Client{Timeout: 5 * time.Second}}
}

func (d *nodeDirectory) checkActive(ctx context.Context, nodeID string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.apiURL+"/v1/gateway/nodes/"+url.PathEscape(nodeID), nil)
	if err != nil {
		return fmt.Errorf("%w: %v", errAPIUnreachable, err)
	}
	req.Header.Set("X-Glider-Gateway", d.secret)
	res, err := d.http.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %v", errAPIUnreachable, err)
	}
	defer res.Body.Close()
	switch res.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return errNodeUnknown
	default:
		return fmt.Errorf("%w: status %d", errAPIUnreachable, res.StatusCode)
	}
	var node struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	if err := json.NewDecoder(io.LimitReader(res.Body, 64<<10)).Decode(&node); err != nil {
		return fmt.Errorf("%w: unreadable answer: %v", errAPIUnreachable, err)
	}
	switch {
	case node.ID != nodeID:
		return fmt.Errorf("%w: asked for %q, answered %q", errAPIUnreachable, nodeID, node.ID)
	case node.Status == "active":
		return nil
	case node.Status == "revoked":
		return errNodeRevoked
	default:
		return fmt.Errorf("%w: status %q", errNodeRevoked, node.Status)
	}
}
