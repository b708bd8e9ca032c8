package main

import (
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	ws "go.temporal.io/api/workflowservice/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The allowlist: what an activity-only worker (TypeScript SDK 1.24) calls, and for each method how its request
// is checked and rewritten for the calling node. Any method not named here is refused, so a method Temporal
// adds later is refused until someone decides otherwise. A rule may return an `after` that rewrites the answer.
type rule func(g *gateway, node string, req any) (after func(resp any) (any, error), err error)

var rules = map[string]rule{
	ws.WorkflowService_GetSystemInfo_FullMethodName:                allowGetSystemInfo,
	ws.WorkflowService_DescribeNamespace_FullMethodName:            allowDescribeNamespace,
	ws.WorkflowService_PollActivityTaskQueue_FullMethodName:        allowPollActivityTaskQueue,
	ws.WorkflowService_RecordActivityTaskHeartbeat_FullMethodName:  allowWithTaskToken,
	ws.WorkflowService_RespondActivityTaskCompleted_FullMethodName: allowWithTaskToken,
	ws.WorkflowService_RespondActivityTaskFailed_FullMethodName:    allowWithTaskToken,
	ws.WorkflowService_RespondActivityTaskCanceled_FullMethodName:  allowWithTaskToken,
	ws.WorkflowService_ShutdownWorker_FullMethodName:               allowShutdownWorker,
	// sdk-core sends these only while DescribeNamespace reports worker_heartbeats, which the gateway clears;
	// Unimplemented is the answer on which it stops quietly.
	ws.WorkflowService_RecordWorkerHeartbeat_FullMethodName: func(*gateway, string, any) (func(any) (any, error), error) {
		return nil, status.Error(codes.Unimplemented, "worker heartbeats are not passed to Temporal")
	},
}

func refused(code codes.Code, reason string) error { return status.Error(code, reason) }

// identityOf is what history shows as the worker that acted: the certificate's node, never what the node says.
func identityOf(node string) string { return "node:" + node }

// ownNamespace refuses a request naming another namespace; an empty one is filled in.
func (g *gateway) ownNamespace(namespace string) error {
	if namespace != "" && namespace != g.namespace {
		return refused(codes.PermissionDenied, "namespace "+namespace+" is not the nodes' namespace")
	}
	return nil
}

func allowGetSystemInfo(*gateway, string, any) (func(any) (any, error), error) { return nil, nil }

func allowDescribeNamespace(g *gateway, _ string, req any) (func(any) (any, error), error) {
	r := req.(*ws.DescribeNamespaceRequest)
	if r.Namespace != g.namespace || r.Id != "" {
		return nil, refused(codes.PermissionDenied, "only namespace "+g.namespace+" may be described")
	}
	return func(resp any) (any, error) { return reducedNamespace(resp.(*ws.DescribeNamespaceResponse)), nil }, nil
}

func allowPollActivityTaskQueue(g *gateway, node string, req any) (func(any) (any, error), error) {
	r := req.(*ws.PollActivityTaskQueueRequest)
	if err := g.ownNamespace(r.Namespace); err != nil {
		return nil, err
	}
	q := r.GetTaskQueue()
	if q.GetName() != taskQueueOf(node) || q.GetKind() != enumspb.TASK_QUEUE_KIND_NORMAL || q.GetNormalName() != "" {
		return nil, refused(codes.PermissionDenied, "a node polls only its own task queue "+taskQueueOf(node)+" (kind normal)")
	}
	r.Namespace, r.Identity = g.namespace, identityOf(node)
	// Versioning would route the node's queue by deployment, and the control queue carries worker commands
	// with raw task tokens: neither is the node's to choose.
	r.WorkerVersionCapabilities, r.DeploymentOptions, r.WorkerControlTaskQueue = nil, nil, ""
	return func(resp any) (any, error) {
		p := resp.(*ws.PollActivityTaskQueueResponse)
		if len(p.TaskToken) > 0 {
			p.TaskToken = g.keys.wrap(node, p.TaskToken, g.now().Add(tokenLifetime(p)))
		}
		return p, nil
	}, nil
}

// tokenLifetime is how long a node may hold a task's token: its attempt's timeout and an hour of slack.
func tokenLifetime(p *ws.PollActivityTaskQueueResponse) time.Duration {
	lifetime := envelopeDefaultLifetime
	if d := p.GetStartToCloseTimeout().AsDuration(); d > 0 {
		lifetime = d
	} else if d := p.GetScheduleToCloseTimeout().AsDuration(); d > 0 {
		lifetime = d
	}
	return lifetime + envelopeSlack
}

// taskTokenRequest is what the heartbeat and the three responses have in common.
type taskTokenRequest interface {
	GetTaskToken() []byte
	GetNamespace() string
}

func allowWithTaskToken(g *gateway, node string, req any) (func(any) (any, error), error) {
	if err := g.ownNamespace(req.(taskTokenRequest).GetNamespace()); err != nil {
		return nil, err
	}
	raw, err := g.keys.unwrap(node, req.(taskTokenRequest).GetTaskToken(), g.now())
	if err != nil {
		return nil, refused(codes.PermissionDenied, err.Error())
	}
	switch r := req.(type) {
	case *ws.RecordActivityTaskHeartbeatRequest:
		r.TaskToken, r.Namespace, r.Identity, r.ResourceId = raw, g.namespace, identityOf(node), ""
	case *ws.RespondActivityTaskCompletedRequest:
		r.TaskToken, r.Namespace, r.Identity, r.ResourceId = raw, g.namespace, identityOf(node), ""
		r.WorkerVersion, r.Deployment, r.DeploymentOptions = nil, nil, nil
	case *ws.RespondActivityTaskFailedRequest:
		r.TaskToken, r.Namespace, r.Identity, r.ResourceId = raw, g.namespace, identityOf(node), ""
		r.WorkerVersion, r.Deployment, r.DeploymentOptions = nil, nil, nil
	case *ws.RespondActivityTaskCanceledRequest:
		r.TaskToken, r.Namespace, r.Identity, r.ResourceId = raw, g.namespace, identityOf(node), ""
		r.WorkerVersion, r.Deployment, r.DeploymentOptions = nil, nil, nil
	default:
		return nil, refused(codes.Internal, "no task-token rule for this request")
	}
	return nil, nil
}

// allowShutdownWorker lets a node cancel the polls of its own activity queue only: aimed elsewhere (a sticky
// queue, a workflow queue, another node's) it would cut other workers' polls short.
func allowShutdownWorker(g *gateway, node string, req any) (func(any) (any, error), error) {
	r := req.(*ws.ShutdownWorkerRequest)
	if err := g.ownNamespace(r.Namespace); err != nil {
		return nil, err
	}
	activityOnly := len(r.TaskQueueTypes) > 0
	for _, t := range r.TaskQueueTypes {
		activityOnly = activityOnly && t == enumspb.TASK_QUEUE_TYPE_ACTIVITY
	}
	if r.TaskQueue != taskQueueOf(node) || r.StickyTaskQueue != "" || !activityOnly {
		return nil, refused(codes.PermissionDenied, "a node shuts down only the activity worker of its own task queue "+taskQueueOf(node))
	}
	// The last heartbeat is the node's own account of itself (queues, host): worker heartbeats are not passed.
	r.Namespace, r.Identity, r.WorkerHeartbeat = g.namespace, identityOf(node), nil
	return nil, nil
}
