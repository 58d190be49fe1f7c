#include "launcher/eval/code_sandbox.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace tessera {
namespace {

bool HavePython() { return ResolvePythonInterpreter("python3").ok(); }

#define SKIP_WITHOUT_PYTHON() \
  if (!HavePython()) GTEST_SKIP() << "python3 is not available"

SandboxLimits QuickLimits() {
  SandboxLimits limits;
  limits.timeout_s = 2;
  limits.memory_limit_mb = 256;
  return limits;
}

int CountOpenFds() {
  int n = 0;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n;
}

bool ProcessAlive(int host_pid) {
  std::ifstream stat(absl::StrCat("/proc/", host_pid, "/stat"));
  std::string line;
  if (!std::getline(stat, line)) return false;
  // "pid (comm) S ..." : a zombie (Z) is dead but not reaped.
  const size_t close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z' &&
         line[close + 2] != 'X';
}

// Processes whose command line mentions `needle`.
std::vector<int> ProcessesMentioning(const std::string& needle) {
  std::vector<int> found;
  DIR* dir = opendir("/proc");
  if (dir == nullptr) return found;
  while (dirent* e = readdir(dir)) {
    int pid;
    if (!absl::SimpleAtoi(e->d_name, &pid)) continue;
    std::ifstream in(absl::StrCat("/proc/", pid, "/cmdline"), std::ios::binary);
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmdline.find(needle) != std::string::npos && ProcessAlive(pid)) found.push_back(pid);
  }
  closedir(dir);
  return found;
}

// No child of ours is left, zombie or not.
void ExpectNoChildren() {
  int status;
  errno = 0;
  EXPECT_EQ(waitpid(-1, &status, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
}

TEST(CodeSandboxTest, PassingProgram) {
  SKIP_WITHOUT_PYTHON();
  ASSERT_OK_AND_ASSIGN(SandboxOutcome o,
                       RunPythonProgram("print('hello', 6 * 7)\n", QuickLimits()));
  EXPECT_TRUE(o.passed) << o.reason << "\n" << o.output;
  EXPECT_EQ(o.reason, "passed");
  EXPECT_EQ(o.exit_code, 0);
  EXPECT_EQ(o.signal, 0);
  EXPECT_FALSE(o.timed_out);
  EXPECT_EQ(o.output, "hello 42\n");
  EXPECT_FALSE(o.output_truncated);
  EXPECT_LT(o.seconds, 2.0);
  ExpectNoChildren();
}

TEST(CodeSandboxTest, EnvironmentIsMinimalAndDeterministic) {
  SKIP_WITHOUT_PYTHON();
  setenv("TESSERA_SANDBOX_SECRET", "leak", 1);
  const std::string program =
      "import os, sys\n"
      "print('secret', os.environ.get('TESSERA_SANDBOX_SECRET'))\n"
      "print('home_is_cwd', os.environ['HOME'] == os.getcwd())\n"
      "print('cwd_prefix', os.path.basename(os.getcwd()).startswith('tessera-sandbox-'))\n"
      "print('no_user_site', sys.flags.no_user_site)\n"
      "print('dont_write_bytecode', sys.dont_write_bytecode)\n"
      "print('lang', os.environ.get('LANG'))\n"
      "print('proxy', [k for k in os.environ if 'proxy' in k.lower()])\n"
      "print('hash_randomization', sys.flags.hash_randomization)\n"
      "print('hash', hash('tessera'))\n";
  ASSERT_OK_AND_ASSIGN(SandboxOutcome a, RunPythonProgram(program, QuickLimits()));
  ASSERT_OK_AND_ASSIGN(SandboxOutcome b, RunPythonProgram(program, QuickLimits()));
  unsetenv("TESSERA_SANDBOX_SECRET");
  ASSERT_TRUE(a.passed) << a.reason << "\n" << a.output;
  EXPECT_TRUE(absl::StrContains(a.output, "secret None\n")) << a.output;
  EXPECT_TRUE(absl::StrContains(a.output, "home_is_cwd True\n")) << a.output;
  EXPECT_TRUE(absl::StrContains(a.output, "cwd_prefix True\n")) << a.output;
  EXPECT_TRUE(absl::StrContains(a.output, "no_user_site 1\n")) << a.output;
  EXPECT_TRUE(absl::StrContains(a.output, "dont_write_bytecode True\n")) << a.output;
  EXPECT_TRUE(absl::StrContains(a.output, "lang C.UTF-8\n")) << a.output;
  EXPECT_TRUE(absl::StrContains(a.output, "proxy []\n")) << a.output;
  EXPECT_TRUE(absl::StrContains(a.output, "hash_randomization 0\n")) << a.output;
  EXPECT_EQ(a.output, b.output) << "PYTHONHASHSEED=0 should make hash() reproducible";
}

TEST(CodeSandboxTest, WorkingDirectoryIsDeleted) {
  SKIP_WITHOUT_PYTHON();
  ASSERT_OK_AND_ASSIGN(
      SandboxOutcome o,
      RunPythonProgram("import os\nos.makedirs('a/b')\nopen('a/b/f', 'w').write('x')\n"
                       "os.chmod('a', 0)\nprint(os.getcwd())\n",
                       QuickLimits()));
  ASSERT_TRUE(o.passed) << o.reason << "\n" << o.output;
  const std::string dir(absl::StripAsciiWhitespace(o.output));
  ASSERT_TRUE(absl::StrContains(dir, "tessera-sandbox-")) << dir;
  EXPECT_NE(access(dir.c_str(), F_OK), 0) << dir << " still exists";
}

TEST(CodeSandboxTest, FailingAssertion) {
  SKIP_WITHOUT_PYTHON();
  const std::string program = BuildHumanEvalProgram(
      "def add(x, y):\n", "    return x - y\n",
      "def check(candidate):\n    assert candidate(2, 3) == 5, 'two plus three'\n", "add");
  ASSERT_OK_AND_ASSIGN(SandboxOutcome o, RunPythonProgram(program, QuickLimits()));
  EXPECT_FALSE(o.passed);
  EXPECT_EQ(o.reason, "failed: AssertionError: two plus three") << o.output;
  EXPECT_EQ(o.exit_code, 1);
}

TEST(CodeSandboxTest, BareAssertion) {
  SKIP_WITHOUT_PYTHON();
  ASSERT_OK_AND_ASSIGN(
      SandboxOutcome o,
      RunHumanEvalCompletion("def f():\n", "    return 1\n", "def check(c):\n    assert c() == 2\n",
                             "f", QuickLimits()));
  EXPECT_FALSE(o.passed);
  EXPECT_EQ(o.reason, "failed: AssertionError") << o.output;
}

TEST(CodeSandboxTest, Raises) {
  SKIP_WITHOUT_PYTHON();
  ASSERT_OK_AND_ASSIGN(
      SandboxOutcome o,
      RunHumanEvalCompletion("def f(x):\n", "    raise ValueError('boom ' + str(x))\n",
                             "def check(candidate):\n    assert candidate(1) == 1\n", "f",
                             QuickLimits()));
  EXPECT_FALSE(o.passed);
  EXPECT_EQ(o.reason, "failed: ValueError: boom 1") << o.output;
}

TEST(CodeSandboxTest, SyntaxError) {
  SKIP_WITHOUT_PYTHON();
  ASSERT_OK_AND_ASSIGN(SandboxOutcome o, RunHumanEvalCompletion("def f(x):\n", "    return (x +\n",
                                                                "def check(candidate):\n    pass\n",
                                                                "f", QuickLimits()));
  EXPECT_FALSE(o.passed);
  EXPECT_TRUE(absl::StartsWith(o.reason, "failed: SyntaxError")) << o.reason << "\n" << o.output;
}

TEST(CodeSandboxTest, ExitCode) {
  SKIP_WITHOUT_PYTHON();
  ASSERT_OK_AND_ASSIGN(SandboxOutcome o,
                       RunPythonProgram("import sys\nsys.exit(3)\n", QuickLimits()));
  EXPECT_FALSE(o.passed);
  EXPECT_EQ(o.reason, "exit code 3");
  EXPECT_EQ(o.exit_code, 3);
}

TEST(CodeSandboxTest, KilledBySignal) {
  SKIP_WITHOUT_PYTHON();
  ASSERT_OK_AND_ASSIGN(SandboxOutcome o,
                       RunPythonProgram("import ctypes\nctypes.string_at(0)\n", QuickLimits()));
  EXPECT_FALSE(o.passed);
  EXPECT_EQ(o.signal, SIGSEGV);
  EXPECT_EQ(o.reason, "killed by signal 11 (SIGSEGV)");
  ExpectNoChildren();
}

// HumanEval runs check() after the completion's module-level code, so a completion that exits
// at import time exits with 0 without any test having run. That must be a failure.
TEST(CodeSandboxTest, ExitBeforeTestsIsAFailure) {
  SKIP_WITHOUT_PYTHON();
  const std::string prompt = "def add(x, y):\n";
  const std::string test = "def check(candidate):\n    assert candidate(2, 3) == 5\n";
  const std::vector<std::string> exits = {"exit(0)", "quit()", "import sys; sys.exit(0)",
                                          "import os; os._exit(0)", "raise SystemExit"};
  for (const std::string& exit_line : exits) {
    SCOPED_TRACE(exit_line);
    const std::string completion = "    return x + y\n\n" + exit_line + "\n";
    // As `tessera eval` runs it ...
    ASSERT_OK_AND_ASSIGN(
        SandboxOutcome o,
        RunPythonProgram(BuildHumanEvalProgram(prompt, completion, test, "add"), QuickLimits()));
    EXPECT_FALSE(o.passed) << o.output;
    EXPECT_EQ(o.exit_code, 0);
    EXPECT_EQ(o.reason, "exited with code 0 before the tests completed");
    // ... and with a random marker.
    ASSERT_OK_AND_ASSIGN(o, RunHumanEvalCompletion(prompt, completion, test, "add", QuickLimits()));
    EXPECT_FALSE(o.passed) << o.output;
    EXPECT_EQ(o.reason, "exited with code 0 before the tests completed");
  }
  // Printing the fixed marker does not fool RunHumanEvalCompletion.
  ASSERT_OK_AND_ASSIGN(
      SandboxOutcome spoof,
      RunHumanEvalCompletion(
          prompt, absl::StrCat("    return 0\n\nprint('", kHumanEvalPassMarker, "'); exit(0)\n"),
          test, "add", QuickLimits()));
  EXPECT_FALSE(spoof.passed);
  // The same completion without the early exit passes, both ways.
  ASSERT_OK_AND_ASSIGN(
      SandboxOutcome ok,
      RunPythonProgram(BuildHumanEvalProgram(prompt, "    return x + y\n", test, "add"),
                       QuickLimits()));
  EXPECT_TRUE(ok.passed) << ok.reason << "\n" << ok.output;
  ASSERT_OK_AND_ASSIGN(
      ok, RunHumanEvalCompletion(prompt, "    return x + y\n", test, "add", QuickLimits()));
  EXPECT_TRUE(ok.passed) << ok.reason << "\n" << ok.output;
  // A plain program that exits with 0 passes: the marker is required only of HumanEval programs.
  ASSERT_OK_AND_ASSIGN(ok, RunPythonProgram("exit(0)\n", QuickLimits()));
  EXPECT_TRUE(ok.passed) << ok.reason;
}

TEST(CodeSandboxTest, OutputWithoutTrailingNewlineStillPasses) {
  SKIP_WITHOUT_PYTHON();
  ASSERT_OK_AND_ASSIGN(
      SandboxOutcome o,
      RunHumanEvalCompletion("def f():\n", "    print('no newline', end='')\n    return 1\n",
                             "def check(candidate):\n    assert candidate() == 1\n", "f",
                             QuickLimits()));
  EXPECT_TRUE(o.passed) << o.reason << "\n" << o.output;
}

TEST(CodeSandboxTest, InfiniteLoopTimesOut) {
  SKIP_WITHOUT_PYTHON();
  SandboxLimits limits = QuickLimits();
  ASSERT_OK_AND_ASSIGN(
      SandboxOutcome o,
      RunHumanEvalCompletion("def f():\n", "    while True: pass\n",
                             "def check(candidate):\n    candidate()\n", "f", limits));
  EXPECT_FALSE(o.passed);
  EXPECT_TRUE(o.timed_out);
  EXPECT_EQ(o.reason, "timeout after 2 s");
  EXPECT_EQ(o.signal, SIGKILL);
  EXPECT_GE(o.seconds, 1.9);
  EXPECT_LT(o.seconds, limits.timeout_s + 2);
  ExpectNoChildren();
}

TEST(CodeSandboxTest, SleepTimesOut) {
  SKIP_WITHOUT_PYTHON();
  SandboxLimits limits = QuickLimits();
  limits.timeout_s = 0.5;
  ASSERT_OK_AND_ASSIGN(SandboxOutcome o,
                       RunPythonProgram("import time\ntime.sleep(100)\n", limits));
  EXPECT_TRUE(o.timed_out);
  EXPECT_EQ(o.reason, "timeout after 0.5 s");
  EXPECT_LT(o.seconds, 2.5);
}

TEST(CodeSandboxTest, UnboundedAllocationHitsMemoryLimit) {
  SKIP_WITHOUT_PYTHON();
  ASSERT_OK_AND_ASSIGN(
      SandboxOutcome o,
      RunPythonProgram("x = []\nwhile True:\n    x.append(' ' * 10**6)\n", QuickLimits()));
  EXPECT_FALSE(o.passed);
  EXPECT_FALSE(o.timed_out);
  EXPECT_EQ(o.reason, "memory limit (MemoryError)") << o.output;
  EXPECT_LT(o.seconds, 2.0);
}

// The program prints the host pids (/proc belongs to the host's PID namespace) and working
// directory of a process tree that sleeps; all of it must be gone after the timeout.
constexpr char kForkingProgram[] =
    "import os, sys, time\n"
    "def host_pid():\n"
    "    return os.readlink('/proc/self')\n"
    "for i in range(3):\n"
    "    if os.fork() == 0:\n"
    "        if i == 2:\n"
    "            os.setsid()  # leaves the process group\n"
    "        if os.fork() == 0:\n"
    "            print('pid', host_pid(), flush=True)\n"
    "            time.sleep(100)\n"
    "            os._exit(0)\n"
    "        print('pid', host_pid(), flush=True)\n"
    "        time.sleep(100)\n"
    "        os._exit(0)\n"
    "print('pid', host_pid(), flush=True)\n"
    "print('cwd', os.getcwd(), flush=True)\n"
    "time.sleep(1)\n";

void ExpectTreeGone(const SandboxOutcome& o) {
  std::vector<int> pids;
  std::string cwd;
  for (absl::string_view line : absl::StrSplit(o.output, '\n')) {
    int pid;
    if (absl::ConsumePrefix(&line, "pid ") && absl::SimpleAtoi(line, &pid)) pids.push_back(pid);
    if (absl::ConsumePrefix(&line, "cwd ")) cwd = std::string(line);
  }
  EXPECT_EQ(pids.size(), 7u) << o.output;
  ASSERT_FALSE(cwd.empty()) << o.output;
  if (o.pid_namespace) {
    for (int pid : pids) EXPECT_FALSE(ProcessAlive(pid)) << "pid " << pid << " survived";
    EXPECT_TRUE(ProcessesMentioning(cwd).empty());
  } else {
    // Without a PID namespace only the process group is killed; the setsid() escapees (2 of
    // them) may survive. Kill them so the test leaves nothing behind.
    for (int pid : ProcessesMentioning(cwd)) kill(pid, SIGKILL);
  }
  ExpectNoChildren();
}

TEST(CodeSandboxTest, ForkedSleepersAreKilledOnTimeout) {
  SKIP_WITHOUT_PYTHON();
  SandboxLimits limits = QuickLimits();
  limits.timeout_s = 1.5;
  ASSERT_OK_AND_ASSIGN(
      SandboxOutcome o,
      RunPythonProgram(std::string(kForkingProgram) + "time.sleep(100)\n", limits));
  EXPECT_TRUE(o.timed_out);
  EXPECT_LT(o.seconds, limits.timeout_s + 2);
  ExpectTreeGone(o);
}

TEST(CodeSandboxTest, BackgroundChildrenNeitherDelayNorSurviveANormalExit) {
  SKIP_WITHOUT_PYTHON();
  SandboxLimits limits = QuickLimits();
  limits.timeout_s = 10;
  ASSERT_OK_AND_ASSIGN(SandboxOutcome o, RunPythonProgram(kForkingProgram, limits));
  EXPECT_TRUE(o.passed) << o.reason << "\n" << o.output;
  EXPECT_FALSE(o.timed_out);
  EXPECT_LT(o.seconds, 3.0);
  ExpectTreeGone(o);
}

TEST(CodeSandboxTest, HugeOutputIsTruncatedWithoutHanging) {
  SKIP_WITHOUT_PYTHON();
  SandboxLimits limits = QuickLimits();
  limits.timeout_s = 20;
  ASSERT_OK_AND_ASSIGN(
      SandboxOutcome o,
      RunPythonProgram("import sys\nsys.stdout.write('BEGIN')\n"
                       "for _ in range(100):\n    sys.stdout.write('x' * (1 << 20))\n"
                       "sys.stdout.write('END\\n')\n",
                       limits));
  EXPECT_TRUE(o.passed) << o.reason;
  EXPECT_TRUE(o.output_truncated);
  EXPECT_EQ(o.output_bytes, 100 * (1 << 20) + 9);
  EXPECT_LE(o.output.size(), static_cast<size_t>(limits.max_output_bytes) + 100);
  EXPECT_TRUE(absl::StartsWith(o.output, "BEGINxxx"));
  EXPECT_TRUE(absl::EndsWith(o.output, "xxxEND\n"));
  EXPECT_TRUE(absl::StrContains(o.output, " bytes omitted ...]"));
  EXPECT_LT(o.seconds, 10.0);
}

TEST(CodeSandboxTest, PrintingForeverTimesOut) {
  SKIP_WITHOUT_PYTHON();
  SandboxLimits limits = QuickLimits();
  limits.timeout_s = 1;
  ASSERT_OK_AND_ASSIGN(SandboxOutcome o,
                       RunPythonProgram("while True:\n    print('y' * 1000)\n", limits));
  EXPECT_TRUE(o.timed_out);
  EXPECT_TRUE(o.output_truncated);
  EXPECT_GT(o.output_bytes, 1 << 20);
  EXPECT_LT(o.seconds, 3.0);
  // As fast as the pipe takes it, from several processes.
  ASSERT_OK_AND_ASSIGN(o, RunPythonProgram("import os\nos.fork()\nos.fork()\nb = b'z' * 65536\n"
                                           "while True:\n    os.write(1, b)\n",
                                           limits));
  EXPECT_TRUE(o.timed_out);
  EXPECT_GT(o.output_bytes, 10 << 20);
  EXPECT_LT(o.seconds, 3.0);
  ExpectNoChildren();
}

TEST(CodeSandboxTest, StdinIsEmpty) {
  SKIP_WITHOUT_PYTHON();
  ASSERT_OK_AND_ASSIGN(
      SandboxOutcome o,
      RunPythonProgram("import sys\nprint(repr(sys.stdin.read()))\n", QuickLimits()));
  EXPECT_TRUE(o.passed) << o.reason;
  EXPECT_EQ(o.output, "''\n");
  ASSERT_OK_AND_ASSIGN(SandboxOutcome in, RunPythonProgram("input()\n", QuickLimits()));
  EXPECT_FALSE(in.passed);
  EXPECT_FALSE(in.timed_out);
  EXPECT_TRUE(absl::StartsWith(in.reason, "failed: EOFError")) << in.reason;
}

TEST(CodeSandboxTest, HugeFileHitsFileSizeLimit) {
  SKIP_WITHOUT_PYTHON();
  SandboxLimits limits = QuickLimits();
  limits.max_file_size_mb = 4;
  ASSERT_OK_AND_ASSIGN(SandboxOutcome o,
                       RunPythonProgram("with open('big', 'wb') as f:\n    while True:\n"
                                        "        f.write(b'\\0' * (1 << 20))\n",
                                        limits));
  EXPECT_FALSE(o.passed);
  EXPECT_FALSE(o.timed_out);
  EXPECT_TRUE(absl::StrContains(o.reason, "File too large")) << o.reason << "\n" << o.output;
  EXPECT_LT(o.seconds, 2.0);
}

class ListeningSocket {
 public:
  ListeningSocket() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof(addr);
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        listen(fd_, 16) != 0 || getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      return;
    }
    port_ = ntohs(addr.sin_port);
  }
  ~ListeningSocket() {
    if (fd_ >= 0) close(fd_);
  }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

TEST(CodeSandboxTest, NetworkIsBlocked) {
  SKIP_WITHOUT_PYTHON();
  ListeningSocket server;
  ASSERT_NE(server.port(), 0);
  const std::string program = absl::StrCat(
      "import socket\n"
      "socket.create_connection(('127.0.0.1', ",
      server.port(),
      "), timeout=1)\n"
      "print('CONNECTED')\n");
  SandboxLimits isolated = QuickLimits();
  ASSERT_OK_AND_ASSIGN(SandboxOutcome blocked, RunPythonProgram(program, isolated));
  // Control: the same program reaches the port without isolation, so the test means something.
  SandboxLimits open = QuickLimits();
  open.isolate_network = false;
  ASSERT_OK_AND_ASSIGN(SandboxOutcome reached, RunPythonProgram(program, open));
  EXPECT_TRUE(reached.passed) << reached.reason << "\n" << reached.output;
  EXPECT_FALSE(reached.network_isolated);
  if (!blocked.network_isolated) {
    GTEST_SKIP() << "no network namespace could be created here; runs are not isolated";
  }
  EXPECT_FALSE(blocked.passed);
  EXPECT_FALSE(absl::StrContains(blocked.output, "CONNECTED"));
  EXPECT_TRUE(absl::StartsWith(blocked.reason, "failed: OSError") ||
              absl::StartsWith(blocked.reason, "failed: ConnectionRefusedError") ||
              absl::StartsWith(blocked.reason, "failed: TimeoutError"))
      << blocked.reason;
}

TEST(CodeSandboxTest, CannotSignalTheCaller) {
  SKIP_WITHOUT_PYTHON();
  // Without a PID namespace the program could (and would) kill this test.
  ASSERT_OK_AND_ASSIGN(SandboxOutcome probe, RunPythonProgram("pass\n", QuickLimits()));
  if (!probe.pid_namespace) GTEST_SKIP() << "no PID namespace here: the caller is visible";
  ASSERT_OK_AND_ASSIGN(
      SandboxOutcome o,
      RunPythonProgram(absl::StrCat("import os, signal\n"
                                    "try:\n    os.kill(",
                                    getpid(),
                                    ", signal.SIGKILL)\n"
                                    "except ProcessLookupError:\n    print('not found')\n"),
                       QuickLimits()));
  EXPECT_TRUE(o.pid_namespace);
  EXPECT_TRUE(o.passed) << o.reason;  // and we are still alive
  EXPECT_EQ(o.output, "not found\n");
}

TEST(CodeSandboxTest, MissingInterpreter) {
  SandboxLimits limits = QuickLimits();
  limits.python = "tessera-no-such-python3";
  ASSERT_OK_AND_ASSIGN(SandboxOutcome o, RunPythonProgram("print(1)\n", limits));
  EXPECT_FALSE(o.passed);
  EXPECT_TRUE(absl::StartsWith(o.reason, "could not start tessera-no-such-python3: ")) << o.reason;
  limits.python = "/nonexistent/python3";
  ASSERT_OK_AND_ASSIGN(o, RunPythonProgram("print(1)\n", limits));
  EXPECT_FALSE(o.passed);
  EXPECT_TRUE(absl::StartsWith(o.reason, "could not start /nonexistent/python3: ")) << o.reason;
}

TEST(CodeSandboxTest, NoDescriptorOrProcessLeaks) {
  SKIP_WITHOUT_PYTHON();
  SandboxLimits limits = QuickLimits();
  limits.timeout_s = 0.3;
  ASSERT_OK(RunPythonProgram("pass\n", limits).status());  // warm up caches
  const int before = CountOpenFds();
  for (int i = 0; i < 10; ++i) {
    ASSERT_OK(RunPythonProgram("print('x')\n", limits).status());
    ASSERT_OK(RunPythonProgram("raise SystemExit(2)\n", limits).status());
    ASSERT_OK(RunPythonProgram("import time\ntime.sleep(5)\n", limits).status());
  }
  EXPECT_EQ(CountOpenFds(), before);
  ExpectNoChildren();
}

TEST(CodeSandboxTest, ConcurrentCallsAreIndependent) {
  SKIP_WITHOUT_PYTHON();
  ASSERT_OK_AND_ASSIGN(SandboxOutcome probe, RunPythonProgram("pass\n", QuickLimits()));
  std::vector<std::thread> threads;
  std::vector<std::string> outputs(3);
  std::vector<int> isolated(3, 0);
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([t, &outputs, &isolated, &probe] {
      for (int i = 0; i < 2; ++i) {
        auto o = RunPythonProgram(absl::StrCat("print(", t, " * 100 + ", i, ")\n"), QuickLimits());
        if (!o.ok() || !o->passed) continue;
        outputs[t] += o->output;
        // A multi-threaded caller gets the same isolation as a single-threaded one.
        isolated[t] += o->network_isolated == probe.network_isolated &&
                       o->pid_namespace == probe.pid_namespace;
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 3; ++t) {
    EXPECT_EQ(outputs[t], absl::StrCat(t * 100, "\n", t * 100 + 1, "\n"));
    EXPECT_EQ(isolated[t], 2);
  }
  ExpectNoChildren();
}

// --- HumanEval-format fixture -------------------------------------------------------------------

struct Task {
  std::string task_id, prompt, canonical_solution, test, entry_point;
};

std::vector<Task> ReadSample() {
  std::vector<Task> tasks;
  std::ifstream in("tests/fixtures/eval/humaneval_sample.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    const nlohmann::json j = nlohmann::json::parse(line);
    tasks.push_back({j.at("task_id"), j.at("prompt"), j.at("canonical_solution"), j.at("test"),
                     j.at("entry_point")});
  }
  return tasks;
}

TEST(HumanEvalSampleTest, BuildProgram) {
  const std::vector<Task> tasks = ReadSample();
  ASSERT_EQ(tasks.size(), 4u);
  const Task& t = tasks[0];
  EXPECT_EQ(t.entry_point, "add");
  const std::string program =
      BuildHumanEvalProgram(t.prompt, t.canonical_solution, t.test, t.entry_point);
  EXPECT_EQ(program, t.prompt + t.canonical_solution + "\n" + t.test + "\ncheck(add)\n" +
                         "print(\"\\n" + kHumanEvalPassMarker + "\", flush=True)\n");
  EXPECT_TRUE(absl::StartsWith(program, "def add(x: int, y: int) -> int:\n"));
  EXPECT_TRUE(absl::StrContains(program, "    return x + y\n\n\n\nMETADATA"));
  EXPECT_TRUE(absl::StrContains(program, "\ndef check(candidate):\n"));
}

TEST(HumanEvalSampleTest, CanonicalSolutionsPass) {
  SKIP_WITHOUT_PYTHON();
  const std::vector<Task> tasks = ReadSample();
  ASSERT_EQ(tasks.size(), 4u);
  std::set<std::string> ids;
  for (const Task& t : tasks) {
    SCOPED_TRACE(t.task_id);
    ids.insert(t.task_id);
    ASSERT_OK_AND_ASSIGN(SandboxOutcome o,
                         RunHumanEvalCompletion(t.prompt, t.canonical_solution, t.test,
                                                t.entry_point, SandboxLimits()));
    EXPECT_TRUE(o.passed) << o.reason << "\n" << o.output;
  }
  EXPECT_EQ(ids.size(), 4u);
}

TEST(HumanEvalSampleTest, WrongSolutionsFail) {
  SKIP_WITHOUT_PYTHON();
  const std::vector<Task> tasks = ReadSample();
  ASSERT_EQ(tasks.size(), 4u);
  const std::vector<std::string> wrong = {
      "    return x - y\n", "    return s\n", "    return [str(i) for i in range(1, n + 1)]\n",
      "    return sum(1 for c in text if c in 'aeiou')\n",  // misses upper case
  };
  for (size_t i = 0; i < tasks.size(); ++i) {
    SCOPED_TRACE(tasks[i].task_id);
    ASSERT_OK_AND_ASSIGN(SandboxOutcome o,
                         RunHumanEvalCompletion(tasks[i].prompt, wrong[i], tasks[i].test,
                                                tasks[i].entry_point, SandboxLimits()));
    EXPECT_FALSE(o.passed);
    EXPECT_TRUE(absl::StartsWith(o.reason, "failed: AssertionError")) << o.reason;
  }
}

}  // namespace
}  // namespace tessera
