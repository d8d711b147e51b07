# Runs one task in the current working directory: the R counterpart of
# worker.py, for a run in the json format.
#
# The directory holds config.json (the global config) and resource.json (this
# task's parameters). The worker reads both with jsonlite, calls task() from
# task.R (beside this file) and writes the result to output.json. A task that
# fails leaves no output.json: its error goes to stderr and the exit code is 1.

library(jsonlite)

here <- dirname(normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))))

read_json_file <- function(path) {
  # Objects become named lists, arrays of scalars vectors; null is NULL.
  fromJSON(path, simplifyVector = TRUE, simplifyDataFrame = FALSE, simplifyMatrix = FALSE)
}

run_task <- function() {
  source(file.path(here, "task.R"))
  global_config <- read_json_file("config.json")
  parameters <- read_json_file("resource.json")
  result <- task(global_config, parameters)
  # Length-one vectors are written as scalars, NA as null, numbers with 15
  # significant digits; a temporary name first, so that output.json is whole.
  json <- toJSON(result, auto_unbox = TRUE, digits = NA, na = "null", null = "null")
  writeLines(enc2utf8(as.character(json)), "output.json.partial", useBytes = TRUE)
  file.rename("output.json.partial", "output.json")
}

status <- tryCatch({
  run_task()
  0L
}, error = function(error) {
  message("Error in the R task: ", conditionMessage(error))
  unlink("output.json.partial")
  1L
})
quit(save = "no", status = status)
