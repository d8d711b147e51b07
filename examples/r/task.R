# One unit of work, in R: the counterpart of task() in a Python task.py.
#
# global_config and parameters arrive as R values read from JSON (objects are
# named lists; arrays of numbers or strings are vectors); what task() returns
# is written as JSON for aggregate() in task.py.

collatz_steps <- function(n) {
  steps <- 0
  while (n != 1) {
    n <- if (n %% 2 == 0) n / 2 else 3 * n + 1
    steps <- steps + 1
  }
  steps
}

task <- function(global_config, parameters) {
  starts <- seq(parameters$first, length.out = global_config$block_size)
  steps <- vapply(starts, collatz_steps, numeric(1))
  best <- which.max(steps)  # the first one on a tie
  list(start = starts[best], steps = steps[best], mean_steps = mean(steps))
}
