package main

import (
	"context"
	"errors"
	"time"

	ws "go.temporal.io/api/workflowservice/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// gateway holds what both paths (gRPC to Temporal, HTTPS to the node API) check on every call.
type gateway struct {
	namespace string
	keys      *tokenKeys
	nodes     *nodeDirectory
	limits    *nodeLimits
	now       func() time.Time
}

func newGateway(cfg *config) *gateway {
	return &gateway{
		namespace: cfg.namespace,
		keys:      cfg.keys,
		nodes:     newNodeDirectory(cfg.apiURL, cfg.apiSecret),
		limits:    newNodeLimits(cfg.nodeRPS, cfg.nodeBurst, cfg.nodeMaxPolls),
		now:       time.Now,
	}
}

// grpcNodeOf is the node of the client certificate the connection was opened with, or Unauthenticated.
func (g *gateway) grpcNodeOf(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", status.Error(codes.Unauthenticated, errNoCertificate.Error())
	}
	tlsInfo, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", status.Error(codes.Unauthenticated, errNoCertificate.Error())
	}
	node, err := nodeIDOf(tlsInfo.State.VerifiedChains, g.now())
	if err != nil {
		return "", status.Error(codes.Unauthenticated, err.Error())
	}
	return node, nil
}

// activeNodeError maps the API's answer about a node to a gRPC status.
func activeNodeError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errAPIUnreachable):
		return status.Error(codes.Unavailable, err.Error())
	default:
		return status.Error(codes.PermissionDenied, err.Error())
	}
}

// unary is the one gate of every gRPC call. Incoming metadata never reaches Temporal (the proxy is built with
// DisableHeaderForwarding), so a node cannot name a namespace or credentials in headers.
func (g *gateway) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	node, after, err := g.admit(ctx, req, info.FullMethod)
	if err == nil && info.FullMethod == ws.WorkflowService_PollActivityTaskQueue_FullMethodName {
		done, ok := g.limits.startPoll(node)
		if !ok {
			err = status.Error(codes.ResourceExhausted, "too many concurrent polls")
		} else {
			defer done()
		}
	}
	if err != nil {
		logRefused(node, info.FullMethod, status.Convert(err).Message())
		return nil, err
	}
	// Temporal's own errors pass through as they are (and are not refusals).
	resp, err := handler(ctx, req)
	if err != nil || after == nil {
		return resp, err
	}
	return after(resp)
}

// admit checks a call in order: the node from its certificate, its rate, the allowlist, the API's word that
// the node is active, then the method's own rule, which rewrites the request for the node.
func (g *gateway) admit(ctx context.Context, req any, method string) (node string, after func(any) (any, error), err error) {
	if node, err = g.grpcNodeOf(ctx); err != nil {
		return "", nil, err
	}
	if !g.limits.allow(node) {
		return node, nil, status.Error(codes.ResourceExhausted, "rate limited")
	}
	allow, ok := rules[method]
	if !ok {
		return node, nil, status.Error(codes.PermissionDenied, "method not allowed for nodes")
	}
	if err = activeNodeError(g.nodes.checkActive(ctx, node)); err != nil {
		return node, nil, err
	}
	// A field this build does not know could not be checked: it is dropped rather than passed on.
	dropUnknownFields(req.(proto.Message).ProtoReflect())
	after, err = allow(g, node, req)
	return node, after, err
}

// stream refuses every streaming call: Temporal's services have none a node needs. It also guards the unknown
// service handler (OperatorService and anything else not registered).
func (g *gateway) stream(_ any, ss grpc.ServerStream, info *grpc.StreamServerInfo, _ grpc.StreamHandler) error {
	node, err := g.grpcNodeOf(ss.Context())
	if err == nil {
		err = status.Error(codes.PermissionDenied, "method not allowed for nodes")
	}
	logRefused(node, info.FullMethod, status.Convert(err).Message())
	return err
}

// unknownService answers a service the gateway does not serve (OperatorService, health, reflection, …).
func unknownService(any, grpc.ServerStream) error {
	return status.Error(codes.PermissionDenied, "method not allowed for nodes")
}

// dropUnknownFields clears, in a request and every message in it, the fields this build's protos do not know.
func dropUnknownFields(m protoreflect.Message) {
	m.SetUnknown(nil)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				dropUnknownFields(mv.Message())
				return true
			})
		case fd.IsList() && fd.Message() != nil:
			for i := 0; i < v.List().Len(); i++ {
				dropUnknownFields(v.List().Get(i).Message())
			}
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			dropUnknownFields(v.Message())
		}
		return true
	})
}
