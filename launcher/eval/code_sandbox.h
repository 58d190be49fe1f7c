// Running untrusted Python programs (HumanEval-style model completions plus their unit tests) in a
// separate, contained process, for pass@1 scoring in `tessera eval` (task code_generation).
//
//   SandboxLimits limits;                       // 10 s, 1 GiB address space, 64 KiB of output
//   ASSIGN_OR_RETURN(SandboxOutcome o,
//                    RunPythonProgram(BuildHumanEvalProgram(prompt, completion, test, entry),
//                                     limits));
//   record["passed"] = o.passed; record["result"] = o.reason;   // "failed: AssertionError", ...
//
// Every run gets a fresh temporary working directory (also HOME and TMPDIR; deleted afterwards),
// the program in a file there, a minimal environment (PATH, HOME, TMPDIR, LANG=C.UTF-8,
// PYTHONHASHSEED=0, ...; nothing inherited, no proxies), stdin from /dev/null, and stdout+stderr
// through one pipe that is drained continuously (only `max_output_bytes` are kept: the head and
// the tail). The child runs in its own process group; when it exits, or when the wall-clock
// timeout hits, the whole group is SIGKILLed and the child is reaped. Limits: RLIMIT_AS
// (memory), RLIMIT_CPU (timeout + 1 s), RLIMIT_FSIZE, RLIMIT_CORE = 0, RLIMIT_NPROC (when not
// root; the kernel does not enforce it for root).
//
// The interpreter runs as `python -s -B FILE`, not -I: isolated mode implies -E, which would
// also drop PYTHONHASHSEED (and with it reproducible set/dict-of-str ordering). Since the
// environment is built from scratch, -E would add nothing; -s drops the user site directory.
//
// Isolation, best effort, reported in the outcome:
//  * network: a new network namespace (only a down loopback, so every connect() fails), created
//    directly, or inside a new user namespace when not privileged. If neither is allowed the
//    program runs with the host network and `network_isolated` is false.
//  * processes: when possible the child is PID 1 of a new PID namespace, so when it exits or is
//    killed the kernel kills every process it started, even ones that left the process group
//    (setsid), and it cannot signal any process outside. Side effect: like any PID 1 it ignores
//    signals it sends itself whose action is the default (os.kill(os.getpid(), SIGTERM) is a
//    no-op; real crashes still kill it).
//  * NOT isolated: the file system (the program runs with the caller's user id, root included,
//    and can read or write anything that user can) and the number of processes when root. Run
//    the eval as an unprivileged user, or in a container, if the completions are not trusted.
//
// Crashes, timeouts, memory exhaustion and runaway output are outcomes (passed = false with a
// reason), never errors of the caller; absl errors are returned only for local failures (no
// temporary directory, pipe, or process could be created).
//
// Threads: RunPythonProgram blocks the calling thread until the child is reaped. Intended to be
// called from one thread at a time; concurrent calls are safe too (each waits only for its own
// pid and owns its descriptors). The child is started like posix_spawn does (clone with
// CLONE_VM | CLONE_VFORK, so a caller holding gigabytes of weights pays no page-table copy);
// between clone and exec it makes only async-signal-safe system calls on data prepared before.
// The host must not reap children it did not start (no SIGCHLD handler doing waitpid(-1)).
#ifndef TESSERA_LAUNCHER_EVAL_CODE_SANDBOX_H_
#define TESSERA_LAUNCHER_EVAL_CODE_SANDBOX_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace tessera {

struct SandboxLimits {
  double timeout_s = 10;                // wall clock; the whole process group is killed after it
  int64_t memory_limit_mb = 1024;       // RLIMIT_AS of the interpreter (and of each child)
  int64_t max_output_bytes = 64 << 10;  // stdout+stderr kept (head and tail); the rest is read
                                        // and discarded, so a chatty child never blocks
  int64_t max_file_size_mb = 16;        // RLIMIT_FSIZE: a larger write fails with EFBIG
  int64_t max_processes = 512;          // RLIMIT_NPROC when not root (counts all of the user's
                                        // processes and threads); 0 leaves it unchanged
  bool isolate_network = true;          // try a private network namespace
  std::string python = "python3";       // name (searched on PATH) or path of the interpreter
};

struct SandboxOutcome {
  bool passed = false;
  // "passed", "failed: AssertionError: ...", "timeout after 10 s", "killed by signal 9 (SIGKILL)",
  // "exit code 3", "memory limit (MemoryError)", "exited with code 0 before the tests completed",
  // "could not start python3: ...".
  std::string reason;
  int exit_code = -1;  // when the process exited; -1 otherwise
  int signal = 0;      // the signal that killed it, 0 if none
  bool timed_out = false;
  double seconds = 0;             // wall clock from start to reap
  std::string output;             // stdout+stderr interleaved, truncated (see below)
  int64_t output_bytes = 0;       // bytes the program wrote in all
  bool output_truncated = false;  // `output` = head + "[... N bytes omitted ...]" + tail
  bool network_isolated = false;  // the run had no network (see above)
  bool pid_namespace = false;     // the run was PID 1 of its own PID namespace
};

// The line a HumanEval program prints after check() returned. A HumanEval program passes only
// if it exits with code 0 AND printed the marker line, so a completion that exits (exit(),
// sys.exit(0), os._exit(0), raise SystemExit) at import time, before check() ran, is a failure,
// not a vacuous pass.
inline constexpr char kHumanEvalPassMarker[] = "__TESSERA_CHECK_PASSED__";

// prompt + completion + "\n" + test + "\n" + "check(" + entry_point + ")\n" +
// "print(\"\\n" + kHumanEvalPassMarker + "\", flush=True)\n"
std::string BuildHumanEvalProgram(const std::string& prompt, const std::string& completion,
                                  const std::string& test, const std::string& entry_point);

// Runs `program` with `limits.python` in a fresh directory. passed = exit code 0, no signal, no
// timeout and, for a program made by BuildHumanEvalProgram (recognized by its last line), the
// marker line in the output. Blocks until the child is reaped (at most about timeout + 1.3 s).
absl::StatusOr<SandboxOutcome> RunPythonProgram(const std::string& program,
                                                const SandboxLimits& limits);

// The same as RunPythonProgram(BuildHumanEvalProgram(...)), except that the marker carries a
// random per-run suffix, so not even a completion that prints kHumanEvalPassMarker and exits
// can fake a pass.
absl::StatusOr<SandboxOutcome> RunHumanEvalCompletion(const std::string& prompt,
                                                      const std::string& completion,
                                                      const std::string& test,
                                                      const std::string& entry_point,
                                                      const SandboxLimits& limits);

// The interpreter `python` really is: sys.executable as reported by running it once with the
// caller's environment (so a pyenv shim, a bash script, resolves to the real binary, which then
// runs with the minimal environment). Cached per name, failures included. NotFound /
// FailedPrecondition when it cannot be run; callers may use it to fail early.
absl::StatusOr<std::string> ResolvePythonInterpreter(const std::string& python);

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_EVAL_CODE_SANDBOX_H_
