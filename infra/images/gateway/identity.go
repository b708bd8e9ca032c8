package main

import (
	"crypto/x509"
	"errors"
	"regexp"
	"strings"
	"time"
)

var nodeIDPattern = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$`)

const nodeURIPrefix = "spiffe://glider-gun/node/"

var (
	errNoCertificate   = errors.New("no client certificate")
	errNoNodeIdentity  = errors.New("the certificate does not name exactly one node")
	errCertificateOver = errors.New("the certificate has expired")
)

// nodeIDOf is the node a verified client certificate names: its one URI SAN spiffe://glider-gun/node/<id>.
// The TLS handshake has already checked the chain to GATEWAY_CLIENT_CA (and the validity then); NotAfter is
// checked again here because a connection can outlive its certificate by days.
func nodeIDOf(verifiedChains [][]*x509.Certificate, now time.Time) (string, error) {
	if len(verifiedChains) == 0 || len(verifiedChains[0]) == 0 {
		return "", errNoCertificate
	}
	leaf := verifiedChains[0][0]
	if now.After(leaf.NotAfter) {
		return "", errCertificateOver
	}
	if len(leaf.URIs) != 1 {
		return "", errNoNodeIdentity
	}
	id, ok := strings.CutPrefix(leaf.URIs[0].String(), nodeURIPrefix)
	if !ok || !nodeIDPattern.MatchString(id) {
		return "", errNoNodeIdentity
	}
	return id, nil
}

// taskQueueOf is the one Temporal task queue a node polls.
func taskQueueOf(nodeID string) string { return "node-" + nodeID }
