package main

import (
	"go.temporal.io/api/proxy"
	ws "go.temporal.io/api/workflowservice/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// maxMessageBytes bounds one gRPC message each way: Temporal's payload limits are a few MiB (2 MiB per blob
// by default), and a poll answer carries an activity's input and heartbeat details.
const maxMessageBytes = 64 << 20

// upstreamDialOptions is the one place the gateway→Temporal hop is configured: plaintext to a frontend on
// loopback or a private network today; TLS to a self-hosted cluster's frontend goes here.
func upstreamDialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes), grpc.MaxCallSendMsgSize(maxMessageBytes)),
	}
}

// newTemporalProxy forwards the calls the gateway admits to Temporal. It is Go, not a TypeScript proxy on
// protobufjs, because Go's protobuf keeps fields it does not know when it re-encodes an answer the gateway
// rewrote (a poll answer with its token wrapped), so fields a newer server adds still reach the SDK.
// Header forwarding is off: nothing a node puts in metadata (authorization, temporal-namespace) goes upstream.
func newTemporalProxy(address string) (ws.WorkflowServiceServer, *grpc.ClientConn, error) {
	conn, err := grpc.NewClient(address, upstreamDialOptions()...)
	if err != nil {
		return nil, nil, err
	}
	server, err := proxy.NewWorkflowServiceProxyServer(proxy.WorkflowServiceProxyOptions{
		Client:                  ws.NewWorkflowServiceClient(conn),
		DisableHeaderForwarding: true,
	})
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return server, conn, nil
}
