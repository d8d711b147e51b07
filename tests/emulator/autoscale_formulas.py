"""Test data: the sample formulas of Microsoft's autoscale article, as printed.

Source: "Create a formula to automatically scale compute nodes in a Batch
pool", https://learn.microsoft.com/azure/batch/batch-automatic-scaling
(markdown: MicrosoftDocs/azure-docs, articles/batch/batch-automatic-scaling.md,
commit 004ec532ffd5dbb44ccfc5fa4777731fe874e52c), and the REST reference
"Evaluate an automatic scaling formula" for the last one. Transcribed
verbatim; only Example 4's C# placeholders are filled in as its code does
(``{0}`` = the current time in RFC 1123, ``{1}`` = 4).
"""

from __future__ import annotations

import email.utils
import time

SOURCE = "https://learn.microsoft.com/azure/batch/batch-automatic-scaling"

PENDING_TASKS = """startingNumberOfVMs = 1;
maxNumberofVMs = 25;
pendingTaskSamplePercent = $PendingTasks.GetSamplePercent(180 * TimeInterval_Second);
pendingTaskSamples = pendingTaskSamplePercent < 70 ? startingNumberOfVMs : avg($PendingTasks.GetSample(180 * TimeInterval_Second));
$TargetDedicatedNodes=min(maxNumberofVMs, pendingTaskSamples);
$NodeDeallocationOption = taskcompletion;"""

PREEMPTED_NODES = """maxNumberofVMs = 25;
$TargetDedicatedNodes = min(maxNumberofVMs, $PreemptedNodeCount.GetSample(180 * TimeInterval_Second));
$TargetLowPriorityNodes = min(maxNumberofVMs , maxNumberofVMs - $TargetDedicatedNodes);
$NodeDeallocationOption = taskcompletion;"""

CPU_COMPLETE = """$totalDedicatedNodes =
    (min($CPUPercent.GetSample(TimeInterval_Minute * 10)) > 0.7) ?
    ($CurrentDedicatedNodes * 1.1) : $CurrentDedicatedNodes;
$totalDedicatedNodes =
    (avg($CPUPercent.GetSample(TimeInterval_Minute * 60)) < 0.2) ?
    ($CurrentDedicatedNodes * 0.9) : $totalDedicatedNodes;
$TargetDedicatedNodes = min(400, $totalDedicatedNodes)"""

DOTNET_MONDAYS = "$TargetDedicatedNodes = (time().weekday == 1 ? 5:1);"

PYTHON_WORKING_HOURS = """$curTime = time();
             $workHours = $curTime.hour >= 8 && $curTime.hour < 18; 
             $isWeekday = $curTime.weekday >= 1 && $curTime.weekday <= 5; 
             $isWorkingWeekdayHour = $workHours && $isWeekday; 
             $TargetDedicated = $isWorkingWeekdayHour ? 20:10;"""  # noqa: W291 - as printed

EVALUATE_SNIPPET = """
        $curTime = time();
        $workHours = $curTime.hour >= 8 && $curTime.hour < 18;
        $isWeekday = $curTime.weekday >= 1 && $curTime.weekday <= 5;
        $isWorkingWeekdayHour = $workHours && $isWeekday;
        $TargetDedicatedNodes = $isWorkingWeekdayHour ? 20:10;
    """

EXAMPLE_1_TIME = """$curTime = time();
$workHours = $curTime.hour >= 8 && $curTime.hour < 18;
$isWeekday = $curTime.weekday >= 1 && $curTime.weekday <= 5;
$isWorkingWeekdayHour = $workHours && $isWeekday;
$TargetDedicatedNodes = $isWorkingWeekdayHour ? 20:10;
$NodeDeallocationOption = taskcompletion;"""

EXAMPLE_2_TASKS = """// Get pending tasks for the past 15 minutes.
$samples = $PendingTasks.GetSamplePercent(TimeInterval_Minute * 15);
// If we have fewer than 70 percent data points, we use the last sample point,
// otherwise we use the maximum of last sample point and the history average.
$tasks = $samples < 70 ? max(0,$PendingTasks.GetSample(1)) : max( $PendingTasks.GetSample(1), avg($PendingTasks.GetSample(TimeInterval_Minute * 15)));
// If number of pending tasks is not 0, set targetVM to pending tasks, otherwise
// half of current dedicated.
$targetVMs = $tasks > 0? $tasks:max(0, $TargetDedicatedNodes/2);
// The pool size is capped at 20, if target VM value is more than that, set it
// to 20. This value should be adjusted according to your use case.
$TargetDedicatedNodes = max(0, min($targetVMs, 20));
// Set node deallocation mode - let running tasks finish before removing a node
$NodeDeallocationOption = taskcompletion;"""

EXAMPLE_3_PARALLEL = """// Determine whether 70 percent of the samples have been recorded in the past
// 15 minutes; if not, use last sample
$samples = $ActiveTasks.GetSamplePercent(TimeInterval_Minute * 15);
$tasks = $samples < 70 ? max(0,$ActiveTasks.GetSample(1)) : max( $ActiveTasks.GetSample(1),avg($ActiveTasks.GetSample(TimeInterval_Minute * 15)));
// Set the number of nodes to add to one-fourth the number of active tasks (the
// MaxTasksPerComputeNode property on this pool is set to 4, adjust this number
// for your use case)
$cores = $TargetDedicatedNodes * 4;
$extraVMs = (($tasks - $cores) + 3) / 4;
$targetVMs = ($TargetDedicatedNodes + $extraVMs);
// Attempt to grow the number of compute nodes to match the number of active
// tasks, with a maximum of 3
$TargetDedicatedNodes = max(0,min($targetVMs,3));
// Keep the nodes active until the tasks finish
$NodeDeallocationOption = taskcompletion;"""

EXAMPLE_4_INITIAL = """
    $TargetDedicatedNodes = {1};
    lifespan         = time() - time(""{0}"");
    span             = TimeInterval_Minute * 60;
    startup          = TimeInterval_Minute * 10;
    ratio            = 50;

    $TargetDedicatedNodes = (lifespan > startup ? (max($RunningTasks.GetSample(span, ratio), $ActiveTasks.GetSample(span, ratio)) == 0 ? 0 : $TargetDedicatedNodes) : {1});
    """

# REST reference "Evaluate an automatic scaling formula", request body example.
REST_EVALUATE = ("totalNodes=($CPUPercent.GetSamplePercent(TimeInterval_Minute*0,TimeInterval_Minute*10)<0.7?5:"
                 "(min($CPUPercent.GetSample(TimeInterval_Minute*0, TimeInterval_Minute*10))>0.8?"
                 "($CurrentDedicated*1.1):$CurrentDedicated));$targetDedicatedNodes=min(100,totalNodes);")


def example_4() -> str:
    # The C# verbatim string doubles its quotes; string.Format fills {0} and {1}.
    now = email.utils.formatdate(time.time(), usegmt=True)
    return EXAMPLE_4_INITIAL.replace('""', '"').replace("{0}", now).replace("{1}", "4")


FORMULAS = {
    "pending-tasks": PENDING_TASKS,
    "preempted-nodes": PREEMPTED_NODES,
    "cpu-complete": CPU_COMPLETE,
    "dotnet-mondays": DOTNET_MONDAYS,
    "python-working-hours": PYTHON_WORKING_HOURS,
    "evaluate-snippet": EVALUATE_SNIPPET,
    "example-1-time": EXAMPLE_1_TIME,
    "example-2-tasks": EXAMPLE_2_TASKS,
    "example-3-parallel": EXAMPLE_3_PARALLEL,
    "example-4-initial": None,   # built at test time: it embeds the current time
    "rest-evaluate": REST_EVALUATE,
}
