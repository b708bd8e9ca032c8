package main

import (
	namespacepb "go.temporal.io/api/namespace/v1"
	ws "go.temporal.io/api/workflowservice/v1"
)

// reducedNamespace is the DescribeNamespace answer a node gets: what sdk-core 1.24 reads (the namespace's name,
// state and id, its payload limits, its capabilities), and nothing about its configuration, replication or
// other workers. Capabilities are copied one by one, so one Temporal adds later stays off until someone looks
// at it; worker_heartbeats and worker_commands stay off for good: the first makes the worker call
// RecordWorkerHeartbeat, the second makes it poll a control queue whose commands carry raw task tokens.
func reducedNamespace(in *ws.DescribeNamespaceResponse) *ws.DescribeNamespaceResponse {
	info := in.GetNamespaceInfo()
	out := &namespacepb.NamespaceInfo{Name: info.GetName(), State: info.GetState(), Id: info.GetId()}
	if l := info.GetLimits(); l != nil {
		out.Limits = &namespacepb.NamespaceInfo_Limits{
			BlobSizeLimitError:                   l.BlobSizeLimitError,
			MemoSizeLimitError:                   l.MemoSizeLimitError,
			WorkflowTaskCompletionSizeLimitError: l.WorkflowTaskCompletionSizeLimitError,
		}
	}
	if c := info.GetCapabilities(); c != nil {
		out.Capabilities = &namespacepb.NamespaceInfo_Capabilities{
			EagerWorkflowStart:                 c.EagerWorkflowStart,
			SyncUpdate:                         c.SyncUpdate,
			AsyncUpdate:                        c.AsyncUpdate,
			WorkerHeartbeats:                   false,
			ReportedProblemsSearchAttribute:    c.ReportedProblemsSearchAttribute,
			WorkflowPause:                      c.WorkflowPause,
			StandaloneActivities:               c.StandaloneActivities,
			WorkerPollCompleteOnShutdown:       c.WorkerPollCompleteOnShutdown,
			PollerAutoscaling:                  c.PollerAutoscaling,
			WorkerCommands:                     false,
			StandaloneNexusOperation:           c.StandaloneNexusOperation,
			WorkflowUpdateCallbacks:            c.WorkflowUpdateCallbacks,
			PollerAutoscalingAutoEnroll:        c.PollerAutoscalingAutoEnroll,
			WorkflowTaskCompletionPagination:   c.WorkflowTaskCompletionPagination,
			StandaloneActivityStartDelay:       c.StandaloneActivityStartDelay,
			StandaloneActivityBatchOperations:  c.StandaloneActivityBatchOperations,
			StandaloneActivityOperatorCommands: c.StandaloneActivityOperatorCommands,
		}
	}
	return &ws.DescribeNamespaceResponse{NamespaceInfo: out}
}
