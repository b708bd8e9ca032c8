package main

import (
	"context"
	"crypto/x509"
	"net/url"
	"strings"
	"testing"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	deploymentpb "go.temporal.io/api/deployment/v1"
	enumspb "go.temporal.io/api/enums/v1"
	namespacepb "go.temporal.io/api/namespace/v1"
	"go.temporal.io/api/operatorservice/v1"
	replicationpb "go.temporal.io/api/replication/v1"
	taskqueuepb "go.temporal.io/api/taskqueue/v1"
	ws "go.temporal.io/api/workflowservice/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Errorf("%s: got %v (%v), want %v", what, got, err, want)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func ownPoll(node string) *ws.PollActivityTaskQueueRequest {
	return &ws.PollActivityTaskQueueRequest{Namespace: "default", Identity: "liar", TaskQueue: &taskqueuepb.TaskQueue{Name: "node-" + node, Kind: enumspb.TASK_QUEUE_KIND_NORMAL}}
}

func TestPollOnlyTheNodesOwnQueue(t *testing.T) {
	g := startTestGateway(t, nil)
	a := g.grpcClient(t, g.pki.node(t, "a"))
	ctx := ctxT(t)
	cases := map[string]*ws.PollActivityTaskQueueRequest{
		"another node's queue":         {Namespace: "default", TaskQueue: &taskqueuepb.TaskQueue{Name: "node-b", Kind: enumspb.TASK_QUEUE_KIND_NORMAL}},
		"a look-alike queue":           {Namespace: "default", TaskQueue: &taskqueuepb.TaskQueue{Name: "node-a2", Kind: enumspb.TASK_QUEUE_KIND_NORMAL}},
		"a sub-queue":                  {Namespace: "default", TaskQueue: &taskqueuepb.TaskQueue{Name: "node-a/sticky", Kind: enumspb.TASK_QUEUE_KIND_NORMAL}},
		"the queue without prefix":     {Namespace: "default", TaskQueue: &taskqueuepb.TaskQueue{Name: "a", Kind: enumspb.TASK_QUEUE_KIND_NORMAL}},
		"sticky kind":                  {Namespace: "default", TaskQueue: &taskqueuepb.TaskQueue{Name: "node-a", Kind: enumspb.TASK_QUEUE_KIND_STICKY}},
		"unspecified kind":             {Namespace: "default", TaskQueue: &taskqueuepb.TaskQueue{Name: "node-a"}},
		"a sticky queue's normal name": {Namespace: "default", TaskQueue: &taskqueuepb.TaskQueue{Name: "node-a", Kind: enumspb.TASK_QUEUE_KIND_NORMAL, NormalName: "node-b"}},
		"another namespace":            {Namespace: "other", TaskQueue: &taskqueuepb.TaskQueue{Name: "node-a", Kind: enumspb.TASK_QUEUE_KIND_NORMAL}},
		"no queue":                     {Namespace: "default"},
	}
	for name, req := range cases {
		_, err := a.PollActivityTaskQueue(ctx, req)
		wantCode(t, name, err, codes.PermissionDenied)
	}
	if n := g.temporal.calls("PollActivityTaskQueue"); n != 0 {
		t.Fatalf("%d refused polls reached Temporal", n)
	}

	req := ownPoll("a")
	req.Namespace = ""
	req.WorkerControlTaskQueue = "temporal-sys/worker-commands/x"
	req.DeploymentOptions = &deploymentpb.WorkerDeploymentOptions{DeploymentName: "d", BuildId: "b"}
	req.WorkerVersionCapabilities = &commonpb.WorkerVersionCapabilities{BuildId: "b", UseVersioning: true}
	if _, err := a.PollActivityTaskQueue(ctx, req); err != nil {
		t.Fatal(err)
	}
	got := g.temporal.last("PollActivityTaskQueue").(*ws.PollActivityTaskQueueRequest)
	if got.Identity != "node:a" || got.Namespace != "default" || got.WorkerControlTaskQueue != "" || got.DeploymentOptions != nil || got.WorkerVersionCapabilities != nil {
		t.Fatalf("the poll was not rewritten for the node: %v", got)
	}
}

func TestTaskTokensAreWrappedForTheNodeAndCheckedOnTheWayBack(t *testing.T) {
	g := startTestGateway(t, nil)
	raw := []byte("raw-server-token")
	g.temporal.answer["PollActivityTaskQueue"] = func(context.Context, any) (any, error) {
		return &ws.PollActivityTaskQueueResponse{TaskToken: raw, ActivityId: "1", StartToCloseTimeout: durationpb.New(2 * time.Hour)}, nil
	}
	a := g.grpcClient(t, g.pki.node(t, "a"))
	b := g.grpcClient(t, g.pki.node(t, "b"))
	ctx := ctxT(t)
	taskA, err := a.PollActivityTaskQueue(ctx, ownPoll("a"))
	must(t, err)
	taskB, err := b.PollActivityTaskQueue(ctx, ownPoll("b"))
	must(t, err)
	if string(taskA.TaskToken) == string(raw) {
		t.Fatal("the raw token reached the node")
	}
	expiry := time.Unix(int64(beUint64(taskA.TaskToken[2:10])), 0)
	if d := time.Until(expiry); d < 3*time.Hour-time.Minute || d > 3*time.Hour+time.Minute {
		t.Fatalf("expiry in %v, want start-to-close + 1h", d)
	}

	// Each of the four calls passes the node's own token, unwrapped, and nothing else.
	calls := map[string]func(token []byte) error{
		"RecordActivityTaskHeartbeat": func(tok []byte) error {
			_, err := a.RecordActivityTaskHeartbeat(ctx, &ws.RecordActivityTaskHeartbeatRequest{Namespace: "default", TaskToken: tok, Identity: "liar"})
			return err
		},
		"RespondActivityTaskCompleted": func(tok []byte) error {
			_, err := a.RespondActivityTaskCompleted(ctx, &ws.RespondActivityTaskCompletedRequest{Namespace: "default", TaskToken: tok, Identity: "liar"})
			return err
		},
		"RespondActivityTaskFailed": func(tok []byte) error {
			_, err := a.RespondActivityTaskFailed(ctx, &ws.RespondActivityTaskFailedRequest{Namespace: "default", TaskToken: tok, Identity: "liar"})
			return err
		},
		"RespondActivityTaskCanceled": func(tok []byte) error {
			_, err := a.RespondActivityTaskCanceled(ctx, &ws.RespondActivityTaskCanceledRequest{Namespace: "default", TaskToken: tok, Identity: "liar"})
			return err
		},
	}
	type tokenRequest interface {
		GetTaskToken() []byte
		GetIdentity() string
	}
	for method, call := range calls {
		must(t, call(taskA.TaskToken))
		got := g.temporal.last(method).(tokenRequest)
		if string(got.GetTaskToken()) != string(raw) || got.GetIdentity() != "node:a" {
			t.Errorf("%s reached Temporal with token %q, identity %q", method, got.GetTaskToken(), got.GetIdentity())
		}
		wantCode(t, method+" with node b's token", call(taskB.TaskToken), codes.PermissionDenied)
		wantCode(t, method+" with the raw token", call(raw), codes.PermissionDenied)
		flipped := append([]byte(nil), taskA.TaskToken...)
		flipped[len(flipped)/2] ^= 1
		wantCode(t, method+" with a bit flipped", call(flipped), codes.PermissionDenied)
		wantCode(t, method+" cut short", call(taskA.TaskToken[:len(taskA.TaskToken)-1]), codes.PermissionDenied)
		if n := g.temporal.calls(method); n != 1 {
			t.Errorf("%s: %d calls reached Temporal, want 1", method, n)
		}
	}
	_, err = a.RespondActivityTaskCompleted(ctx, &ws.RespondActivityTaskCompletedRequest{Namespace: "other", TaskToken: taskA.TaskToken})
	wantCode(t, "another namespace", err, codes.PermissionDenied)
}

func beUint64(b []byte) uint64 {
	var n uint64
	for _, c := range b[:8] {
		n = n<<8 | uint64(c)
	}
	return n
}

func TestDescribeNamespaceIsReduced(t *testing.T) {
	g := startTestGateway(t, nil)
	// Made up with both capabilities set: the dev server advertises neither, so a test only against it would
	// pass whatever the gateway does.
	g.temporal.answer["DescribeNamespace"] = func(context.Context, any) (any, error) {
		return &ws.DescribeNamespaceResponse{
			NamespaceInfo: &namespacepb.NamespaceInfo{
				Name: "default", State: enumspb.NAMESPACE_STATE_REGISTERED, Id: "ns-id", Description: "secret plans", OwnerEmail: "ops@example.com",
				Data:         map[string]string{"k": "v"},
				Capabilities: &namespacepb.NamespaceInfo_Capabilities{WorkerHeartbeats: true, WorkerCommands: true, SyncUpdate: true, PollerAutoscaling: true},
				Limits:       &namespacepb.NamespaceInfo_Limits{BlobSizeLimitError: 2 << 20, MemoSizeLimitError: 1 << 20},
			},
			Config:            &namespacepb.NamespaceConfig{HistoryArchivalUri: "s3://bucket"},
			ReplicationConfig: &replicationpb.NamespaceReplicationConfig{ActiveClusterName: "active"},
		}, nil
	}
	a := g.grpcClient(t, g.pki.node(t, "a"))
	ctx := ctxT(t)
	got, err := a.DescribeNamespace(ctx, &ws.DescribeNamespaceRequest{Namespace: "default"})
	must(t, err)
	info, caps := got.GetNamespaceInfo(), got.GetNamespaceInfo().GetCapabilities()
	if caps.GetWorkerHeartbeats() || caps.GetWorkerCommands() {
		t.Fatalf("worker heartbeats or commands left on: %v", caps)
	}
	if !caps.GetSyncUpdate() || !caps.GetPollerAutoscaling() || info.GetName() != "default" || info.GetId() != "ns-id" ||
		info.GetState() != enumspb.NAMESPACE_STATE_REGISTERED || info.GetLimits().GetBlobSizeLimitError() != 2<<20 {
		t.Fatalf("what the SDK needs was lost: %v", got)
	}
	if info.GetDescription() != "" || info.GetOwnerEmail() != "" || len(info.GetData()) > 0 || got.Config != nil || got.ReplicationConfig != nil {
		t.Fatalf("more than the SDK needs was passed: %v", got)
	}
	_, err = a.DescribeNamespace(ctx, &ws.DescribeNamespaceRequest{Namespace: "other"})
	wantCode(t, "another namespace", err, codes.PermissionDenied)
	_, err = a.DescribeNamespace(ctx, &ws.DescribeNamespaceRequest{Namespace: "default", Id: "other-id"})
	wantCode(t, "a namespace by id", err, codes.PermissionDenied)
}

func TestShutdownWorkerOnlyForTheNodesOwnActivityQueue(t *testing.T) {
	g := startTestGateway(t, nil)
	a := g.grpcClient(t, g.pki.node(t, "a"))
	ctx := ctxT(t)
	activity := []enumspb.TaskQueueType{enumspb.TASK_QUEUE_TYPE_ACTIVITY}
	for name, req := range map[string]*ws.ShutdownWorkerRequest{
		"another node's queue": {Namespace: "default", TaskQueue: "node-b", TaskQueueTypes: activity},
		"a look-alike queue":   {Namespace: "default", TaskQueue: "node-a2", TaskQueueTypes: activity},
		"a sticky queue":       {Namespace: "default", TaskQueue: "node-a", StickyTaskQueue: "node-b-sticky", TaskQueueTypes: activity},
		"workflow polls":       {Namespace: "default", TaskQueue: "node-a", TaskQueueTypes: []enumspb.TaskQueueType{enumspb.TASK_QUEUE_TYPE_ACTIVITY, enumspb.TASK_QUEUE_TYPE_WORKFLOW}},
		"every type":           {Namespace: "default", TaskQueue: "node-a"},
		"another namespace":    {Namespace: "other", TaskQueue: "node-a", TaskQueueTypes: activity},
	} {
		_, err := a.ShutdownWorker(ctx, req)
		wantCode(t, name, err, codes.PermissionDenied)
	}
	_, err := a.ShutdownWorker(ctx, &ws.ShutdownWorkerRequest{Namespace: "default", TaskQueue: "node-a", TaskQueueTypes: activity, Identity: "liar", WorkerInstanceKey: "k"})
	must(t, err)
	got := g.temporal.last("ShutdownWorker").(*ws.ShutdownWorkerRequest)
	if got.Identity != "node:a" || got.WorkerInstanceKey != "k" || g.temporal.calls("ShutdownWorker") != 1 {
		t.Fatalf("reached Temporal: %v (%d calls)", got, g.temporal.calls("ShutdownWorker"))
	}
}

func TestEverythingElseIsRefused(t *testing.T) {
	logs := captureLog(t)
	g := startTestGateway(t, nil)
	conn := g.grpcConn(t, g.pki.node(t, "a"))
	ctx := ctxT(t)
	_, err := ws.NewWorkflowServiceClient(conn).StartWorkflowExecution(ctx, &ws.StartWorkflowExecutionRequest{Namespace: "default"})
	wantCode(t, "StartWorkflowExecution", err, codes.PermissionDenied)
	_, err = ws.NewWorkflowServiceClient(conn).RecordWorkerHeartbeat(ctx, &ws.RecordWorkerHeartbeatRequest{Namespace: "default"})
	wantCode(t, "RecordWorkerHeartbeat", err, codes.Unimplemented)
	_, err = operatorservice.NewOperatorServiceClient(conn).ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: "default"})
	wantCode(t, "OperatorService", err, codes.PermissionDenied)
	err = conn.Invoke(ctx, "/grpc.health.v1.Health/Check", &ws.GetSystemInfoRequest{}, &ws.GetSystemInfoResponse{})
	wantCode(t, "an unknown service", err, codes.PermissionDenied)
	if n := g.temporal.calls("StartWorkflowExecution"); n != 0 {
		t.Fatalf("StartWorkflowExecution reached Temporal")
	}
	var refusals []string
	for _, line := range logs() {
		if line["msg"] == "refused" && line["node"] == "a" && line["reason"] != "" {
			refusals = append(refusals, line["method"].(string))
		}
	}
	want := []string{ws.WorkflowService_StartWorkflowExecution_FullMethodName, ws.WorkflowService_RecordWorkerHeartbeat_FullMethodName,
		operatorservice.OperatorService_ListSearchAttributes_FullMethodName, "/grpc.health.v1.Health/Check"}
	if strings.Join(refusals, " ") != strings.Join(want, " ") {
		t.Fatalf("refusals logged: %v, want one line each for %v", refusals, want)
	}
}

func TestIdentityComesFromTheCertificateOnly(t *testing.T) {
	g := startTestGateway(t, nil)
	ctx := ctxT(t)
	_, err := g.grpcClient(t).GetSystemInfo(ctx, &ws.GetSystemInfoRequest{})
	wantCode(t, "no certificate", err, codes.Unauthenticated)

	other := newTestPKI(t, "another CA")
	_, err = g.grpcClient(t, other.node(t, "a")).GetSystemInfo(ctx, &ws.GetSystemInfoRequest{})
	wantCode(t, "another CA's certificate", err, codes.Unavailable) // the handshake fails

	two, _ := url.Parse(nodeURIPrefix + "b")
	one, _ := url.Parse(nodeURIPrefix + "a")
	both := g.pki.issue(t, &x509.Certificate{URIs: []*url.URL{one, two}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	_, err = g.grpcClient(t, both).GetSystemInfo(ctx, &ws.GetSystemInfoRequest{})
	wantCode(t, "two node names", err, codes.Unauthenticated)
	bad, _ := url.Parse(nodeURIPrefix + "A/../b")
	_, err = g.grpcClient(t, g.pki.issue(t, &x509.Certificate{URIs: []*url.URL{bad}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})).GetSystemInfo(ctx, &ws.GetSystemInfoRequest{})
	wantCode(t, "not a node id", err, codes.Unauthenticated)

	// Headers are never passed on: neither a credential nor a namespace.
	a := g.grpcClient(t, g.pki.node(t, "a"))
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer stolen", "temporal-namespace", "other", "x-glider-node", "b")
	_, err = a.GetSystemInfo(ctx, &ws.GetSystemInfoRequest{})
	must(t, err)
	g.temporal.mu.Lock()
	defer g.temporal.mu.Unlock()
	for _, md := range g.temporal.headers {
		for _, name := range []string{"authorization", "temporal-namespace", "x-glider-node"} {
			if len(md.Get(name)) > 0 {
				t.Errorf("%s reached Temporal: %v", name, md)
			}
		}
	}
}

func TestRevocationIsAskedOnEveryCall(t *testing.T) {
	g := startTestGateway(t, nil)
	a := g.grpcClient(t, g.pki.node(t, "a"))
	ctx := ctxT(t)
	_, err := a.GetSystemInfo(ctx, &ws.GetSystemInfoRequest{})
	must(t, err)
	g.api.setStatus("a", "revoked") // on the connection already open
	_, err = a.GetSystemInfo(ctx, &ws.GetSystemInfoRequest{})
	wantCode(t, "revoked", err, codes.PermissionDenied)
	g.api.setStatus("a", "down")
	_, err = a.GetSystemInfo(ctx, &ws.GetSystemInfoRequest{})
	wantCode(t, "API failing", err, codes.Unavailable)
	_, err = g.grpcClient(t, g.pki.node(t, "c")).GetSystemInfo(ctx, &ws.GetSystemInfoRequest{})
	wantCode(t, "unknown node", err, codes.PermissionDenied)
	if n := g.temporal.calls("GetSystemInfo"); n != 1 {
		t.Fatalf("%d calls reached Temporal, want 1", n)
	}
}

func TestACertificateThatExpiresOnAnOpenConnection(t *testing.T) {
	g := startTestGateway(t, nil)
	cert := g.pki.issue(t, &x509.Certificate{
		URIs:      []*url.URL{mustURL(nodeURIPrefix + "a")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(2 * time.Second),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	a := g.grpcClient(t, cert)
	ctx := ctxT(t)
	_, err := a.GetSystemInfo(ctx, &ws.GetSystemInfoRequest{})
	must(t, err)
	time.Sleep(time.Until(cert.Leaf.NotAfter) + 1100*time.Millisecond)
	_, err = a.GetSystemInfo(ctx, &ws.GetSystemInfoRequest{})
	wantCode(t, "expired on the open connection", err, codes.Unauthenticated)
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func TestPerNodeLimits(t *testing.T) {
	g := startTestGateway(t, func(c *config) { c.nodeRPS, c.nodeBurst, c.nodeMaxPolls = 0.001, 3, 1 })
	release := make(chan struct{})
	g.temporal.answer["PollActivityTaskQueue"] = func(ctx context.Context, _ any) (any, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return &ws.PollActivityTaskQueueResponse{}, nil
	}
	a := g.grpcClient(t, g.pki.node(t, "a"))
	ctx := ctxT(t)
	polled := make(chan error, 1)
	go func() {
		_, err := a.PollActivityTaskQueue(ctx, ownPoll("a"))
		polled <- err
	}()
	for g.temporal.calls("PollActivityTaskQueue") == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	_, err := a.PollActivityTaskQueue(ctx, ownPoll("a"))
	wantCode(t, "a second poll over the cap of one", err, codes.ResourceExhausted)
	close(release)
	must(t, <-polled)
	_, err = a.GetSystemInfo(ctx, &ws.GetSystemInfoRequest{})
	must(t, err) // the third call: the refused poll counted too
	_, err = a.GetSystemInfo(ctx, &ws.GetSystemInfoRequest{})
	wantCode(t, "a fourth call over a burst of 3", err, codes.ResourceExhausted)
	// Another node has its own bucket.
	_, err = g.grpcClient(t, g.pki.node(t, "b")).GetSystemInfo(ctx, &ws.GetSystemInfoRequest{})
	must(t, err)
}

func TestFieldsTheGatewayDoesNotKnowAreNotPassedOn(t *testing.T) {
	g := startTestGateway(t, nil)
	req := ownPoll("a")
	var unknown []byte
	unknown = protowire.AppendTag(unknown, 999, protowire.BytesType)
	unknown = protowire.AppendString(unknown, "node-b")
	req.ProtoReflect().SetUnknown(unknown)
	req.TaskQueue.ProtoReflect().SetUnknown(unknown)
	_, err := g.grpcClient(t, g.pki.node(t, "a")).PollActivityTaskQueue(ctxT(t), req)
	must(t, err)
	got := g.temporal.last("PollActivityTaskQueue").(*ws.PollActivityTaskQueueRequest)
	if len(got.ProtoReflect().GetUnknown()) > 0 || len(got.TaskQueue.ProtoReflect().GetUnknown()) > 0 {
		t.Fatal("an unknown field reached Temporal")
	}
	// Answers keep theirs: a field a newer server adds still reaches the SDK.
	g.temporal.answer["PollActivityTaskQueue"] = func(context.Context, any) (any, error) {
		resp := &ws.PollActivityTaskQueueResponse{TaskToken: []byte("raw")}
		resp.ProtoReflect().SetUnknown(unknown)
		return resp, nil
	}
	resp, err := g.grpcClient(t, g.pki.node(t, "a")).PollActivityTaskQueue(ctxT(t), ownPoll("a"))
	must(t, err)
	if !proto.Equal(&ws.PollActivityTaskQueueResponse{}, &ws.PollActivityTaskQueueResponse{}) || string(resp.ProtoReflect().GetUnknown()) != string(unknown) {
		t.Fatal("an answer's unknown field was lost")
	}
}
