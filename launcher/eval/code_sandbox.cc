#include "launcher/eval/code_sandbox.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "kernels/status_macros.h"

extern char** environ;

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

namespace tessera {
namespace {

using Clock = std::chrono::steady_clock;

// Every pass marker starts with this (kHumanEvalPassMarker, and the per-run random ones).
constexpr absl::string_view kMarkerPrefix = "__TESSERA_CHECK_PASSED";

// ---------------------------------------------------------------------------------------------
// Small helpers.

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    Reset(std::exchange(o.fd_, -1));
    return *this;
  }
  ~Fd() { Reset(); }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void Reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

absl::Status ErrnoError(absl::string_view what, int err) {
  return absl::InternalError(absl::StrCat("code sandbox: ", what, ": ", strerror(err)));
}

// Moves `fd` to a number >= 3 (so dup2 onto 0/1/2 in the child never collides) with CLOEXEC.
absl::StatusOr<Fd> HighCloexecFd(int fd, absl::string_view what) {
  if (fd < 0) return ErrnoError(what, errno);
  if (fd >= 3) return Fd(fd);
  const int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  const int err = errno;
  ::close(fd);
  if (moved < 0) return ErrnoError(what, err);
  return Fd(moved);
}

// Keeps the first half of the budget and the last half of what was written.
class OutputCapture {
 public:
  explicit OutputCapture(int64_t max_bytes) {
    const size_t budget = static_cast<size_t>(std::max<int64_t>(max_bytes, 0));
    head_limit_ = budget / 2;
    tail_limit_ = budget - head_limit_;
  }

  void Append(const char* data, size_t n) {
    total_ += static_cast<int64_t>(n);
    const size_t take = std::min(n, head_limit_ - head_.size());
    head_.append(data, take);
    data += take;
    n -= take;
    if (n == 0 || tail_limit_ == 0) return;
    if (n >= tail_limit_) {
      tail_.assign(data + n - tail_limit_, tail_limit_);
      return;
    }
    tail_.append(data, n);
    if (tail_.size() > 2 * tail_limit_) tail_.erase(0, tail_.size() - tail_limit_);
  }

  int64_t total() const { return total_; }
  bool truncated() const { return total_ > static_cast<int64_t>(head_limit_ + tail_limit_); }

  std::string Text() const {
    const absl::string_view tail = tail_.size() > tail_limit_
                                       ? absl::string_view(tail_).substr(tail_.size() - tail_limit_)
                                       : absl::string_view(tail_);
    if (!truncated()) return absl::StrCat(head_, tail);
    const int64_t omitted =
        total_ - static_cast<int64_t>(head_.size()) - static_cast<int64_t>(tail.size());
    return absl::StrCat(head_, "\n[... ", omitted, " bytes omitted ...]\n", tail);
  }

 private:
  size_t head_limit_ = 0;
  size_t tail_limit_ = 0;
  std::string head_;
  std::string tail_;  // may hold up to 2 * tail_limit_; Text() keeps the last tail_limit_
  int64_t total_ = 0;
};

// ---------------------------------------------------------------------------------------------
// The child side. It is started like posix_spawn starts one: clone(CLONE_VM | CLONE_VFORK) on a
// stack of its own, so no page tables are copied however large the caller is (a fork of a
// process holding gigabytes of weights costs ~40 ms per GiB), and the calling thread sleeps
// until the child has exec'd or exited. The child shares the caller's memory, so it runs only
// async-signal-safe system calls on data prepared by the parent, writes nothing but
// `ChildPlan::error`/`error_stage`, and runs with every signal blocked until the handlers are
// reset. It is not instrumented by sanitizers (it must not touch shadow memory for its stack).

enum : int32_t { kStageChdir = 1, kStageStdio, kStageRlimit, kStageExec };

const char* StageName(int32_t stage) {
  switch (stage) {
    case kStageChdir:
      return "chdir";
    case kStageStdio:
      return "redirecting stdio";
    case kStageRlimit:
      return "setrlimit";
    case kStageExec:
      return "exec";
  }
  return "setup";
}

struct ChildPlan {
  const char* path = nullptr;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  const char* cwd = nullptr;  // null: inherit
  int devnull = -1, out_w = -1;
  pid_t parent_pid = 0;
  bool sandbox = false;     // apply the rlimits
  bool in_pid_ns = false;   // cloned into a new PID namespace
  bool new_userns = false;  // cloned into a new user namespace
  // Limits (already clamped to the current hard limits).
  rlimit as{}, cpu{}, fsize{}, core{}, nproc{};
  bool set_nproc = false;
  // "<euid> <euid> 1\n" and "<egid> <egid> 1\n" for a new user namespace.
  const char* uid_map = nullptr;
  const char* gid_map = nullptr;
  // Written by the child when it fails before or at exec (the parent reads them after clone
  // returned, which is after the child exec'd or exited).
  int error = 0;
  int32_t error_stage = 0;
};

#define TESSERA_CHILD_FN __attribute__((no_sanitize("address", "undefined")))

TESSERA_CHILD_FN void WriteFileInChild(const char* path, const char* text) {
  const int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return;
  (void)!write(fd, text, strlen(text));
  close(fd);
}

[[noreturn]] TESSERA_CHILD_FN void ChildFail(ChildPlan* p, int32_t stage) {
  p->error = errno != 0 ? errno : EIO;
  p->error_stage = stage;
  _exit(127);
}

TESSERA_CHILD_FN int ChildMain(void* arg) {
  ChildPlan* p = static_cast<ChildPlan*>(arg);

  // Die with the parent (thread). Outside a PID namespace, also catch the parent dying before
  // prctl took effect.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (!p->in_pid_ns && getppid() != p->parent_pid) _exit(127);
  setpgid(0, 0);

  // Signals (all blocked by the parent around clone): the default action for every one (also
  // for ignored ones, as SIG_IGN survives exec), then nothing blocked.
  struct sigaction dfl;
  memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, nullptr);
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);

  // Map our own uid/gid into a fresh user namespace (so the program sees its usual ids).
  if (p->new_userns) {
    WriteFileInChild("/proc/self/setgroups", "deny");
    WriteFileInChild("/proc/self/uid_map", p->uid_map);
    WriteFileInChild("/proc/self/gid_map", p->gid_map);
  }

  if (p->cwd != nullptr && chdir(p->cwd) != 0) ChildFail(p, kStageChdir);
  if (dup2(p->devnull, 0) < 0 || dup2(p->out_w, 1) < 0 || dup2(p->out_w, 2) < 0) {
    ChildFail(p, kStageStdio);
  }
  // Every other descriptor (including ones other threads opened without O_CLOEXEC) closes on
  // exec.
#ifdef SYS_close_range
  const bool ranged = syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC) == 0;
#else
  const bool ranged = false;
#endif
  if (!ranged) {
    struct rlimit nofile;
    rlim_t max_fd = 65536;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY) {
      max_fd = nofile.rlim_cur < (1 << 20) ? nofile.rlim_cur : (1 << 20);
    }
    for (rlim_t fd = 3; fd < max_fd; ++fd) fcntl(static_cast<int>(fd), F_SETFD, FD_CLOEXEC);
  }

  if (p->sandbox) {
    if (setrlimit(RLIMIT_CORE, &p->core) != 0) ChildFail(p, kStageRlimit);
    if (setrlimit(RLIMIT_FSIZE, &p->fsize) != 0) ChildFail(p, kStageRlimit);
    if (setrlimit(RLIMIT_CPU, &p->cpu) != 0) ChildFail(p, kStageRlimit);
    if (p->set_nproc && setrlimit(RLIMIT_NPROC, &p->nproc) != 0) ChildFail(p, kStageRlimit);
    if (setrlimit(RLIMIT_AS, &p->as) != 0) ChildFail(p, kStageRlimit);
  }

  execve(p->path, p->argv, p->envp);
  ChildFail(p, kStageExec);
}

// ---------------------------------------------------------------------------------------------
// The parent side.

struct ProcessSpec {
  std::vector<std::string> argv;  // argv[0] is the path executed
  std::vector<std::string> env;   // "NAME=value"
  std::string cwd;                // empty: inherit
  bool sandbox = false;
  SandboxLimits limits;  // timeout and output always apply; the rest with `sandbox`
};

struct ProcessResult {
  int start_errno = 0;  // != 0: the child failed before or at exec
  int32_t start_stage = 0;
  bool timed_out = false;
  int exit_code = -1;
  int signal = 0;
  double seconds = 0;
  std::string output;
  int64_t output_bytes = 0;
  bool output_truncated = false;
  bool network_isolated = false;
  bool pid_namespace = false;
};

struct rlimit ClampedLimit(int resource, rlim_t value) {
  struct rlimit current;
  if (getrlimit(resource, &current) == 0 && current.rlim_max != RLIM_INFINITY) {
    value = std::min(value, current.rlim_max);
  }
  struct rlimit out;
  out.rlim_cur = value;
  out.rlim_max = value;
  return out;
}

// Reads what is available, at most 1 MiB per call so that a writer faster than us cannot keep
// the caller from checking its deadline; returns true at end of file (or on a hard error).
bool DrainPipe(int fd, OutputCapture* capture) {
  char buf[64 * 1024];
  for (int reads = 0; reads < 16; ++reads) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n > 0) {
      if (capture != nullptr) capture->Append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) return true;
    if (errno == EINTR) continue;
    return errno != EAGAIN && errno != EWOULDBLOCK;
  }
  return false;
}

int MillisUntil(Clock::time_point t) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(ms + 1, 0, 1 << 30));
}

// A child stack for clone(), unmapped when done.
class ChildStack {
 public:
  static constexpr size_t kSize = 256 << 10;
  ChildStack() {
    void* p = mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK,
                   -1, 0);
    base_ = p == MAP_FAILED ? nullptr : static_cast<char*>(p);
  }
  ~ChildStack() {
    if (base_ != nullptr) munmap(base_, kSize);
  }
  bool ok() const { return base_ != nullptr; }
  void* top() const { return base_ + kSize; }  // stacks grow down on every Linux target we build

 private:
  char* base_ = nullptr;
};

// Starts the child in the first combination of namespaces the kernel allows. Returns its pid,
// or -1 with errno.
pid_t SpawnChild(ChildPlan* plan, const ChildStack& stack, bool want_namespaces,
                 bool isolate_network, ProcessResult* result) {
  // Every signal blocked while the child shares our memory (as posix_spawn does).
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  struct Attempt {
    int flags;
    bool network;
  };
  std::vector<Attempt> attempts;
  if (want_namespaces) {
    // A new PID namespace can only be entered at creation; without privilege, namespaces need a
    // new user namespace too.
    const int net = isolate_network ? CLONE_NEWNET : 0;
    attempts.push_back({CLONE_NEWPID | net, net != 0});
    attempts.push_back({CLONE_NEWUSER | CLONE_NEWPID | net, net != 0});
    if (net != 0) {
      attempts.push_back({CLONE_NEWNET, true});
      attempts.push_back({CLONE_NEWUSER | CLONE_NEWNET, true});
    }
  }
  attempts.push_back({0, false});
  pid_t pid = -1;
  int err = 0;
  for (const Attempt& attempt : attempts) {
    plan->in_pid_ns = (attempt.flags & CLONE_NEWPID) != 0;
    plan->new_userns = (attempt.flags & CLONE_NEWUSER) != 0;
    pid = clone(ChildMain, stack.top(), CLONE_VM | CLONE_VFORK | SIGCHLD | attempt.flags, plan);
    if (pid > 0) {
      result->network_isolated = attempt.network;
      result->pid_namespace = plan->in_pid_ns;
      break;
    }
    err = errno;
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) errno = err;
  return pid;
}

absl::StatusOr<ProcessResult> RunProcess(const ProcessSpec& spec) {
  const SandboxLimits& limits = spec.limits;
  // Everything the child touches is prepared here.
  std::vector<char*> argv;
  for (const std::string& s : spec.argv) argv.push_back(const_cast<char*>(s.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const std::string& s : spec.env) envp.push_back(const_cast<char*>(s.c_str()));
  envp.push_back(nullptr);
  const std::string uid_map = absl::StrCat(geteuid(), " ", geteuid(), " 1\n");
  const std::string gid_map = absl::StrCat(getegid(), " ", getegid(), " 1\n");

  ASSIGN_OR_RETURN(Fd devnull, HighCloexecFd(open("/dev/null", O_RDONLY | O_CLOEXEC), "/dev/null"));
  int out_fds[2];
  if (pipe2(out_fds, O_CLOEXEC) != 0) return ErrnoError("pipe", errno);
  Fd out_r(out_fds[0]), out_w_tmp(out_fds[1]);
  ASSIGN_OR_RETURN(Fd out_w, HighCloexecFd(dup(out_w_tmp.get()), "pipe"));
  out_w_tmp.Reset();
  ChildStack stack;
  if (!stack.ok()) return ErrnoError("mmap child stack", errno);

  ChildPlan plan;
  plan.path = argv[0];
  plan.argv = argv.data();
  plan.envp = envp.data();
  plan.cwd = spec.cwd.empty() ? nullptr : spec.cwd.c_str();
  plan.devnull = devnull.get();
  plan.out_w = out_w.get();
  plan.parent_pid = getpid();
  plan.sandbox = spec.sandbox;
  plan.uid_map = uid_map.c_str();
  plan.gid_map = gid_map.c_str();
  if (spec.sandbox) {
    const rlim_t mb = 1024 * 1024;
    plan.as = ClampedLimit(RLIMIT_AS,
                           static_cast<rlim_t>(std::max<int64_t>(limits.memory_limit_mb, 16)) * mb);
    const rlim_t cpu = static_cast<rlim_t>(std::ceil(std::max(limits.timeout_s, 0.0))) + 1;
    plan.cpu = ClampedLimit(RLIMIT_CPU, cpu + 1);
    plan.cpu.rlim_cur = std::min(cpu, plan.cpu.rlim_max);  // SIGXCPU, then SIGKILL a second later
    plan.fsize = ClampedLimit(
        RLIMIT_FSIZE, static_cast<rlim_t>(std::max<int64_t>(limits.max_file_size_mb, 0)) * mb);
    plan.core = ClampedLimit(RLIMIT_CORE, 0);
    plan.set_nproc = limits.max_processes > 0 && geteuid() != 0;
    if (plan.set_nproc) {
      plan.nproc = ClampedLimit(RLIMIT_NPROC, static_cast<rlim_t>(limits.max_processes));
    }
  }

  ProcessResult result;
  const Clock::time_point start = Clock::now();
  const pid_t pid = SpawnChild(&plan, stack, spec.sandbox, limits.isolate_network, &result);
  if (pid < 0) return ErrnoError("clone", errno);
  // The child has exec'd or exited by now.
  setpgid(pid, pid);  // normally already done by the child; harmless (EACCES) after its exec
  out_w.Reset();
  fcntl(out_r.get(), F_SETFL, fcntl(out_r.get(), F_GETFL) | O_NONBLOCK);
#ifdef SYS_pidfd_open
  Fd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));  // readable once it exits
#else
  Fd pidfd;
#endif

  OutputCapture capture(limits.max_output_bytes);
  const Clock::time_point deadline =
      start +
      std::chrono::microseconds(static_cast<int64_t>(std::max(limits.timeout_s, 0.0) * 1e6));
  auto exited = [pid]() {
    siginfo_t info;
    memset(&info, 0, sizeof(info));
    return waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
           info.si_pid == pid;
  };
  auto poll_once = [&](int timeout_ms, bool with_pidfd) {
    pollfd fds[2];
    int n = 0;
    if (out_r.valid()) fds[n++] = {out_r.get(), POLLIN, 0};
    if (with_pidfd && pidfd.valid()) fds[n++] = {pidfd.get(), POLLIN, 0};
    if (poll(fds, static_cast<nfds_t>(n), timeout_ms) <= 0) return;
    if (out_r.valid() && fds[0].revents != 0 && DrainPipe(out_r.get(), &capture)) out_r.Reset();
  };

  // Until the child has exited (left a zombie by WNOWAIT, which keeps its process group id
  // reserved) or the deadline passed.
  while (!exited()) {
    if (Clock::now() >= deadline) {
      result.timed_out = true;
      break;
    }
    int wait_ms = MillisUntil(deadline);
    if (!pidfd.valid()) wait_ms = std::min(wait_ms, 10);
    poll_once(wait_ms, /*with_pidfd=*/true);
  }
  // Kill what is left of the group: everything on timeout, stragglers (background children that
  // may still hold the pipe) after a normal exit. In a PID namespace the kernel kills all of
  // them anyway when the child, its init, dies.
  kill(-pid, SIGKILL);
  if (result.timed_out) kill(pid, SIGKILL);
  const Clock::time_point grace =
      Clock::now() + std::chrono::milliseconds(result.timed_out ? 250 : 1000);
  while (out_r.valid() && Clock::now() < grace) poll_once(MillisUntil(grace), false);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (out_r.valid()) DrainPipe(out_r.get(), &capture);

  result.start_errno = plan.error;
  result.start_stage = plan.error_stage;
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
  result.output = capture.Text();
  result.output_bytes = capture.total();
  result.output_truncated = capture.truncated();
  return result;
}

// ---------------------------------------------------------------------------------------------
// Interpreting the outcome.

bool LooksLikeExceptionLine(absl::string_view line) {
  if (line.empty() || line[0] == ' ' || line[0] == '\t') return false;
  const absl::string_view name = line.substr(0, line.find(':'));
  if (name.empty()) return false;
  for (const char c : name) {
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.')) return false;
  }
  return absl::EndsWith(name, "Error") || absl::EndsWith(name, "Exception") ||
         absl::EndsWith(name, "Exit") || absl::EndsWith(name, "Interrupt") ||
         absl::EndsWith(name, "Warning") || absl::EndsWith(name, "Iteration") ||
         name.find('.') != absl::string_view::npos;
}

std::vector<absl::string_view> Lines(absl::string_view text) {
  std::vector<absl::string_view> lines;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    absl::string_view line = text.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    if (nl == absl::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return lines;
}

// The exception line of the last traceback ("AssertionError: ..."), or of a SyntaxError report,
// or "" if there is none.
std::string ExceptionSummary(const std::string& output) {
  constexpr absl::string_view kHeader = "Traceback (most recent call last):";
  absl::string_view line_found;
  const size_t tb = output.rfind(kHeader.data(), std::string::npos, kHeader.size());
  if (tb != std::string::npos) {
    for (absl::string_view line : Lines(absl::string_view(output).substr(tb + kHeader.size()))) {
      if (LooksLikeExceptionLine(line)) {
        line_found = line;
        break;
      }
    }
  } else {
    for (absl::string_view line : Lines(output)) {
      if (LooksLikeExceptionLine(line)) line_found = line;
    }
  }
  std::string summary(line_found.substr(0, 300));
  if (line_found.size() > 300) summary += "...";
  return summary;
}

bool HasMarkerLine(const std::string& output, const std::string& marker) {
  for (size_t pos = output.find(marker); pos != std::string::npos;
       pos = output.find(marker, pos + 1)) {
    const size_t end = pos + marker.size();
    const bool line_start = pos == 0 || output[pos - 1] == '\n';
    const bool line_end = end == output.size() || output[end] == '\n' || output[end] == '\r';
    if (line_start && line_end) return true;
  }
  return false;
}

// The marker is printed after a newline, so it starts a line even when the program printed
// something without one; in the source it follows the two characters "\n", so a traceback that
// quotes this line does not show it at the start of a line.
std::string BuildProgramWithMarker(const std::string& prompt, const std::string& completion,
                                   const std::string& test, const std::string& entry_point,
                                   absl::string_view marker) {
  return absl::StrCat(prompt, completion, "\n", test, "\n", "check(", entry_point, ")\n",
                      "print(\"\\n", marker, "\", flush=True)\n");
}

// The marker that a program made by BuildProgramWithMarker prints last, or "" for any other
// program.
std::string MarkerOfProgram(const std::string& program) {
  constexpr absl::string_view kSuffix = "\", flush=True)\n";
  if (!absl::EndsWith(program, kSuffix)) return "";
  const size_t newline = program.rfind('\n', program.size() - 2);
  absl::string_view last =
      absl::string_view(program).substr(newline == std::string::npos ? 0 : newline + 1);
  if (!absl::ConsumePrefix(&last, "print(\"\\n") || !absl::ConsumeSuffix(&last, kSuffix) ||
      !absl::StartsWith(last, kMarkerPrefix)) {
    return "";
  }
  return std::string(last);
}

std::string SignalName(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev != nullptr ? absl::StrCat("SIG", abbrev) : absl::StrCat("signal ", sig);
}

std::string RandomHex(int bytes) {
  std::random_device rd;
  std::string out;
  for (int i = 0; i < bytes; ++i) absl::StrAppend(&out, absl::Hex(rd() & 0xff, absl::kZeroPad2));
  return out;
}

// Deletes the run's directory, also when the program removed permissions inside it.
void RemoveTree(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  for (int attempt = 0; attempt < 4; ++attempt) {
    std::error_code ec;
    fs::remove_all(dir, ec);
    if (!ec || !fs::exists(fs::symlink_status(dir, ec))) return;
    fs::permissions(dir, fs::perms::owner_all, fs::perm_options::add, ec);
    for (auto it = fs::recursive_directory_iterator(
             dir, fs::directory_options::skip_permission_denied, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      std::error_code ignored;
      if (it->is_directory(ignored) && !it->is_symlink(ignored)) {
        fs::permissions(it->path(), fs::perms::owner_all, fs::perm_options::add, ignored);
      }
    }
  }
}

std::string Dirname(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

std::string BuildHumanEvalProgram(const std::string& prompt, const std::string& completion,
                                  const std::string& test, const std::string& entry_point) {
  return BuildProgramWithMarker(prompt, completion, test, entry_point, kHumanEvalPassMarker);
}

absl::StatusOr<std::string> ResolvePythonInterpreter(const std::string& python) {
  static std::mutex mu;
  static auto* cache = new std::map<std::string, absl::StatusOr<std::string>>();
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = cache->find(python); it != cache->end()) return it->second;

  auto resolve = [&]() -> absl::StatusOr<std::string> {
    if (python.empty()) return absl::InvalidArgumentError("empty python interpreter name");
    std::string candidate;
    if (python.find('/') != std::string::npos) {
      candidate = python;
    } else {
      const char* path_env = getenv("PATH");
      const std::string path = path_env != nullptr ? path_env : "/usr/local/bin:/usr/bin:/bin";
      for (absl::string_view dir : absl::StrSplit(path, ':')) {
        const std::string file = absl::StrCat(dir.empty() ? "." : dir, "/", python);
        struct stat st;
        if (stat(file.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
            access(file.c_str(), X_OK) == 0) {
          candidate = file;
          break;
        }
      }
      if (candidate.empty()) return absl::NotFoundError(absl::StrCat(python, " not found on PATH"));
    }
    ProcessSpec spec;
    spec.argv = {candidate, "-c", "import sys; sys.stdout.write(sys.executable or '')"};
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) spec.env.push_back(*e);
    spec.limits.timeout_s = 60;
    spec.limits.max_output_bytes = 8192;
    ASSIGN_OR_RETURN(ProcessResult r, RunProcess(spec));
    if (r.start_errno != 0) {
      return absl::FailedPreconditionError(absl::StrCat(candidate, ": ", strerror(r.start_errno)));
    }
    if (r.timed_out || r.exit_code != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          candidate, " -c 'import sys' failed (",
          r.timed_out ? "timeout" : absl::StrCat("exit code ", r.exit_code, ", signal ", r.signal),
          "): ", absl::StripAsciiWhitespace(r.output)));
    }
    std::string executable(absl::StripAsciiWhitespace(r.output));
    if (executable.empty() || executable[0] != '/' || access(executable.c_str(), X_OK) != 0) {
      executable = candidate;  // no usable sys.executable: run what we found
    }
    if (executable[0] != '/') {
      char cwd[4096];
      if (getcwd(cwd, sizeof(cwd)) != nullptr) executable = absl::StrCat(cwd, "/", executable);
    }
    return executable;
  };
  absl::StatusOr<std::string> resolved = resolve();
  cache->emplace(python, resolved);
  return resolved;
}

absl::StatusOr<SandboxOutcome> RunPythonProgram(const std::string& program,
                                                const SandboxLimits& limits) {
  SandboxOutcome outcome;
  absl::StatusOr<std::string> interpreter = ResolvePythonInterpreter(limits.python);
  if (!interpreter.ok()) {
    outcome.reason =
        absl::StrCat("could not start ", limits.python, ": ", interpreter.status().message());
    return outcome;
  }

  // A fresh directory for the program, its working directory, HOME and TMPDIR.
  const char* tmp_env = getenv("TMPDIR");
  std::string templ = absl::StrCat(tmp_env != nullptr && *tmp_env != '\0' ? tmp_env : "/tmp",
                                   "/tessera-sandbox-XXXXXX");
  if (mkdtemp(templ.data()) == nullptr) return ErrnoError(absl::StrCat("mkdtemp ", templ), errno);
  const std::string dir = templ;
  struct DirCleanup {
    std::string dir;
    ~DirCleanup() { RemoveTree(dir); }
  } cleanup{dir};
  const std::string file = absl::StrCat(dir, "/tessera_program.py");
  {
    std::ofstream out(file, std::ios::binary);
    out << program;
    out.close();
    if (!out) return absl::InternalError(absl::StrCat("code sandbox: cannot write ", file));
  }

  // Not -I: isolated mode implies -E, which would also ignore PYTHONHASHSEED. The environment is
  // built from scratch instead (nothing of the caller's PYTHON* variables reaches the child),
  // -s drops the user site directory, and PYTHONSAFEPATH keeps the script's directory off
  // sys.path (Python >= 3.11; that directory holds only the program anyway).
  ProcessSpec spec;
  spec.argv = {*interpreter, "-s", "-B", file};
  spec.env = {
      absl::StrCat("PATH=", Dirname(*interpreter), ":/usr/local/bin:/usr/bin:/bin"),
      absl::StrCat("HOME=", dir),
      absl::StrCat("TMPDIR=", dir),
      "LANG=C.UTF-8",
      "PYTHONHASHSEED=0",
      "PYTHONDONTWRITEBYTECODE=1",
      "PYTHONNOUSERSITE=1",
      "PYTHONSAFEPATH=1",
      "PYTHONIOENCODING=utf-8",
  };
  spec.cwd = dir;
  spec.sandbox = true;
  spec.limits = limits;
  ASSIGN_OR_RETURN(ProcessResult r, RunProcess(spec));

  outcome.exit_code = r.exit_code;
  outcome.signal = r.signal;
  outcome.timed_out = r.timed_out;
  outcome.seconds = r.seconds;
  outcome.output = std::move(r.output);
  outcome.output_bytes = r.output_bytes;
  outcome.output_truncated = r.output_truncated;
  outcome.network_isolated = r.network_isolated;
  outcome.pid_namespace = r.pid_namespace;

  if (r.start_errno != 0) {
    outcome.reason = absl::StrCat("could not start ", limits.python, ": ", StageName(r.start_stage),
                                  ": ", strerror(r.start_errno));
  } else if (r.timed_out) {
    outcome.reason = absl::StrCat("timeout after ", limits.timeout_s, " s");
  } else if (r.signal != 0) {
    outcome.reason = absl::StrCat("killed by signal ", r.signal, " (", SignalName(r.signal), ")",
                                  r.signal == SIGXCPU ? ": cpu time limit" : "");
  } else if (r.exit_code != 0) {
    const std::string exception = ExceptionSummary(outcome.output);
    if (absl::StartsWith(exception, "MemoryError")) {
      outcome.reason = "memory limit (MemoryError)";
    } else if (!exception.empty()) {
      outcome.reason = absl::StrCat("failed: ", exception);
    } else {
      outcome.reason = absl::StrCat("exit code ", r.exit_code);
    }
  } else if (const std::string marker = MarkerOfProgram(program);
             !marker.empty() && !HasMarkerLine(outcome.output, marker)) {
    outcome.reason = "exited with code 0 before the tests completed";
  } else {
    outcome.passed = true;
    outcome.reason = "passed";
  }
  return outcome;
}

absl::StatusOr<SandboxOutcome> RunHumanEvalCompletion(const std::string& prompt,
                                                      const std::string& completion,
                                                      const std::string& test,
                                                      const std::string& entry_point,
                                                      const SandboxLimits& limits) {
  const std::string marker = absl::StrCat(kMarkerPrefix, "_", RandomHex(8), "__");
  return RunPythonProgram(BuildProgramWithMarker(prompt, completion, test, entry_point, marker),
                          limits);
}

}  // namespace tessera
