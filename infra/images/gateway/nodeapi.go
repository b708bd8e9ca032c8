package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"
)

type nodeKey struct{}

// newNodeAPI passes the node API (docs/remote-nodes.md, "HTTPS: the node API") to the Glider Gun API: enrolment
// without a certificate, every other route only for an active node's certificate, which it names to the API in
// X-Glider-Node. Bodies are streamed both ways, never buffered: a run's state archive is gigabytes.
func newNodeAPI(g *gateway, apiURL, secret string) (http.Handler, error) {
	target, err := url.Parse(apiURL)
	if err != nil || (target.Scheme != "http" && target.Scheme != "https") || target.Host == "" {
		return nil, errors.New("GATEWAY_API_URL is not an http(s) URL")
	}
	proxy := &httputil.ReverseProxy{
		// Rewrite runs after the client's hop-by-hop headers are removed, so a client's `Connection:
		// X-Glider-Node` cannot remove the headers set here; X-Forwarded-* from the client are dropped too.
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = target.Host
			for name := range pr.Out.Header {
				if strings.HasPrefix(strings.ToLower(name), "x-glider-") {
					pr.Out.Header.Del(name)
				}
			}
			pr.Out.Header.Del("Forwarded")
			pr.Out.Header.Set("X-Glider-Gateway", secret)
			if node, ok := pr.In.Context().Value(nodeKey{}).(string); ok {
				pr.Out.Header.Set("X-Glider-Node", node)
			}
		},
		FlushInterval: -1,
		Transport: &http.Transport{
			Proxy:               nil,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true, // archives are gzip already; bodies pass as they are
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			node, _ := r.Context().Value(nodeKey{}).(string)
			logLine("api-error", map[string]any{"node": node, "method": r.Method + " " + r.URL.Path, "reason": err.Error()})
			writeError(w, http.StatusServiceUnavailable, "API_UNREACHABLE", "the API did not answer")
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		route := r.Method + " " + p
		refuse := func(httpStatus int, code, message string, node string) {
			logRefused(node, route, message)
			writeError(w, httpStatus, code, message)
		}
		switch {
		case hasDotSegments(p):
			// The API would resolve them to another route than the one checked here.
			refuse(http.StatusNotFound, "NOT_FOUND", "no such route", "")
			return
		case r.Method == http.MethodPost && p == "/v1/node/enrol":
			// The enrolment token in the body is the credential: no node yet.
		case strings.HasPrefix(p, "/v1/node/") || strings.HasPrefix(p, "/v1/agent/runs/"):
			var node string
			var err error
			if r.TLS == nil {
				err = errNoCertificate
			} else {
				node, err = nodeIDOf(r.TLS.VerifiedChains, g.now())
			}
			if err != nil {
				refuse(http.StatusUnauthorized, "NODE_CERTIFICATE_REQUIRED", err.Error(), "")
				return
			}
			if !g.limits.allow(node) {
				refuse(http.StatusTooManyRequests, "RATE_LIMITED", "rate limited", node)
				return
			}
			if err := g.nodes.checkActive(r.Context(), node); err != nil {
				switch {
				case errors.Is(err, errAPIUnreachable):
					refuse(http.StatusServiceUnavailable, "API_UNREACHABLE", err.Error(), node)
				case errors.Is(err, errNodeUnknown):
					refuse(http.StatusForbidden, "NODE_UNKNOWN", err.Error(), node)
				default:
					refuse(http.StatusForbidden, "NODE_REVOKED", err.Error(), node)
				}
				return
			}
			r = r.WithContext(context.WithValue(r.Context(), nodeKey{}, node))
		default:
			refuse(http.StatusNotFound, "NOT_FOUND", "no such route", "")
			return
		}
		// The checked path is the one sent: re-escaped from its decoded form.
		r.URL.RawPath = ""
		// An answer may start before the upload ends (HTTP/2 always allows it; HTTP/1.1 only when asked).
		_ = http.NewResponseController(w).EnableFullDuplex()
		proxy.ServeHTTP(w, r)
	}), nil
}

func hasDotSegments(p string) bool {
	for _, segment := range strings.Split(p, "/") {
		if segment == "." || segment == ".." {
			return true
		}
	}
	return strings.Contains(p, "//") || strings.Contains(p, "\\")
}

func writeError(w http.ResponseWriter, httpStatus int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpStatus)
	_ = json.NewEncoder(w).Encode(map[string]string{"code": code, "message": message})
}
