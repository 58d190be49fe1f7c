// The `tessera` binary: `tessera <command> [--flags]`, alone or as every rank of an mpirun /
// srun --mpi=pmix job. The only place that initialises MPI, parses flags and turns a Status into
// an exit code.
#include <cstdio>
#include <unistd.h>

#include <cstdlib>
#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "launcher/command_help.h"
#include "launcher/commands.h"
#include "launcher/eval/eval_command.h"
#include "launcher/eval/run_config.h"
#include "launcher/flags.h"
#include "kernels/cpu/cpu_backend.h"
#include "launcher/job.h"
#include "launcher/methods/method_availability.h"
#include "launcher/methods/method_settings.h"
#include "parallel/launch_env.h"
#if defined(TESSERA_WITH_MPI)
#include <mpi.h>
#endif

namespace {

constexpr char kUsage[] =
    "usage: tessera <command> [flags]\n"
    "commands:\n"
    "  generate  --model DIR (--prompt TEXT | --prompts FILE.jsonl) [--max-new-tokens N]\n"
    "            [--temperature T --top-k K --top-p P --seed S --stop a,b --output FILE]\n"
    "  eval      --config RUN.textproto [--set path=value ...] [--model DIR --limit N\n"
    "            --output-dir DIR]\n"
    "  serve     --model DIR [--host 127.0.0.1 --port 8000 --max-batch N --chat-template llama-2]\n"
    "  bench     --model DIR [--prompt-tokens N --decode-tokens N --batch B]\n"
    "  calibrate --model DIR --method SPARSE.textproto --data FILE.jsonl [--calib-tac\n"
    "            --calib-add-sigma C --calib-sample-frac F --output-dir DIR]\n"
    "  plan      --model DIR|config.json --device-memory 80GiB [--tp T --pp P --dtype bf16\n"
    "            --kv-dtype bf16 --memory-utilization 0.9 --workspace 2GiB --json]  (no MPI)\n"
    "layout (with mpirun -np tp*pp*dp or srun --mpi=pmix): --tp T --pp P --dp D\n"
    "run config and methods (generate, eval, serve, bench): --config RUN.textproto\n"
    "  --method METHODS.textproto (presets: configs/methods/) --set method.homer.target_len=4096\n"
    "Run `tessera <command> --help` for every flag.";

int Fail(const std::string& prefix, const std::string& message) {
  std::fprintf(stderr, "%stessera: error: %s\n", prefix.c_str(), message.c_str());
  return 1;
}

// An error found before the ranks know each other (flags, the run config): every rank finds the
// same one, so only the launcher's rank 0 prints it.
int FailBeforeStart(const std::string& message) {
  if (tessera::ReadLaunchEnv().rank > 0) return 1;
  return Fail("", message);
}

int Run(const std::string& command, const tessera::WorldLayout& requested,
        const tessera::config::RunConfig& run_config, bool mpi) {
  auto job = tessera::StartJob(requested, mpi, absl::Seconds(absl::GetFlag(FLAGS_comm_timeout_s)));
  if (!job.ok()) return FailBeforeStart(std::string(job.status().message()));
  // Ranks sharing a machine share its cores; one spin-waiting thread too many per core makes
  // every rank many times slower.
  int threads = absl::GetFlag(FLAGS_threads);
  if (threads <= 0) {
    const tessera::LaunchEnv env = tessera::ReadLaunchEnv();
    const int local = env.local_size > 0 ? env.local_size : job->layout().world_size();
    threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / local);
  }
  tessera::CpuBackend::SetThreads(threads);
  absl::Status status;
  if (command == "generate") {
    status = tessera::RunGenerate(*job, run_config.method());
  } else if (command == "eval") {
    status = tessera::RunEval(*job, run_config);
  } else if (command == "serve") {
    status = tessera::RunServe(*job, run_config.method());
  } else if (command == "calibrate") {
    status = tessera::RunCalibrate(*job, run_config.method());
  } else {
    status = tessera::RunBench(*job, run_config.method());
  }
  if (status.ok()) return 0;
  if (tessera::IsReportedElsewhere(status)) return 1;
  const std::string prefix = job->layout().world_size() > 1 ? job->layout().Prefix() : "";
  return Fail(prefix, std::string(status.message()));
}

// generate, serve and bench take the model, layout and sampling sections of a run config (--config),
// with flags given on the command line winning, and its method section (--config, --method,
// --set method.*), validated. Without --config, --set may change method fields only.
absl::StatusOr<tessera::config::RunConfig> GenerateOrBenchConfig(
    const std::vector<std::string>& sets) {
  tessera::config::RunConfig c;
  const bool has_config = tessera::FlagWasGiven("config");
  if (has_config) {
    absl::StatusOr<tessera::config::RunConfig> loaded =
        tessera::LoadRunConfig(absl::GetFlag(FLAGS_config));
    if (!loaded.ok()) return loaded.status();
    c = *std::move(loaded);
  }
  if (absl::Status s = tessera::ApplyMethodFlag(&c); !s.ok()) return s;
  for (const std::string& set : sets) {
    if (!has_config && !absl::StartsWith(set, "method.")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--set ", set, ": needs --config (a run config to change); without one, --set "
          "changes method.* fields only"));
    }
    if (absl::Status s = tessera::SetField(&c, set); !s.ok()) return s;
  }
  if (has_config) {
    // A value that makes no sense (model.max_seq_len: -1) must not be skipped silently.
    if (absl::Status valid = tessera::ValidateRunSettings(c); !valid.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(absl::GetFlag(FLAGS_config), ": ", valid.message()));
    }
  }
  if (absl::Status s = tessera::KvDTypeOf(c.model()).status(); !s.ok()) return s;
  tessera::ApplyRunConfigToFlags(c);
  if (absl::Status s = tessera::ValidateMethodSettings(c.method()); !s.ok()) return s;
  return c;
}

// libgomp reads its spin-wait settings once, when it loads, so they can only be chosen by
// setting the environment and starting the program again. Its default (spin ~300k iterations at
// every barrier) makes a rank many times slower as soon as another process takes a core; a short
// spin keeps barriers fast on an idle machine and yields the core quickly on a busy one. A user's
// own OMP_WAIT_POLICY or GOMP_SPINCOUNT is left alone.
void ChooseOpenMpSpinning(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr) return;
  setenv("GOMP_SPINCOUNT", "10000", 1);
  execv("/proc/self/exe", argv);  // returns only on failure: run on with the defaults
}

}  // namespace

int main(int argc, char** argv) {
  ChooseOpenMpSpinning(argv);
  absl::SetProgramUsageMessage(kUsage);
  if (argc >= 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
    std::printf("%s\n", kUsage);
    return 0;
  }
  if (argc < 2 || argv[1][0] == '-') {
    std::fprintf(stderr, "%s\n", kUsage);
    return 2;
  }
  const std::string command = argv[1];
  if (!tessera::IsCommand(command)) {
    return Fail("", absl::StrCat("unknown command \"", command, "\"\n", kUsage));
  }
  std::vector<std::string> args = {std::string(argv[0]) + " " + command};
  for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
  if (tessera::WantsHelp({args.begin() + 1, args.end()})) {
    std::printf("%s", tessera::CommandHelp(command).c_str());
    return 0;
  }
  args = tessera::NormalizeFlagNames(args);
  const std::vector<std::string> sets = tessera::TakeRepeatedFlag(&args, "set");
  std::vector<char*> cargs;
  for (std::string& a : args) cargs.push_back(a.data());
  std::vector<char*> rest = absl::ParseCommandLine(static_cast<int>(cargs.size()), cargs.data());
  if (rest.size() > 1) {
    return Fail("", absl::StrCat("unexpected argument \"", rest[1],
                                 "\"; flags take the form --name=value or --name value"));
  }
  // A flag the command does not read would be silently ignored: refuse it.
  if (const absl::Status s = tessera::CheckCommandFlags(command, tessera::GivenFlagNames());
      !s.ok()) {
    return FailBeforeStart(std::string(s.message()));
  }
  if (const absl::Status flags = tessera::ValidateFlagValues(); !flags.ok()) {
    return FailBeforeStart(std::string(flags.message()));
  }
  if (command == "plan") {  // a single process, no MPI and no weights
    const absl::Status status = tessera::RunPlan();
    return status.ok() ? 0 : Fail("", std::string(status.message()));
  }
  // eval takes its layout from the run config; the other commands from --tp/--pp/--dp.
  absl::StatusOr<tessera::config::RunConfig> run_config =
      command == "eval" ? tessera::EvalConfigFromFlags(sets) : GenerateOrBenchConfig(sets);
  if (!run_config.ok()) return FailBeforeStart(std::string(run_config.status().message()));
  const tessera::WorldLayout requested =
      command == "eval" ? tessera::LayoutOf(*run_config) : tessera::LayoutFromFlags();
  // A method that is set but not built fails here, before any rank loads the model.
  const absl::Status methods = tessera::CheckMethodsAvailable(run_config->method());
  if (!methods.ok()) return FailBeforeStart(std::string(methods.message()));
  const bool mpi = tessera::WantMpi(requested);
#if defined(TESSERA_WITH_MPI)
  if (mpi) {
    // A Slurm step started without --mpi=pmix: Open MPI would abort inside MPI_Init with advice
    // about rebuilding it; the fix is in the launch command.
    const tessera::LaunchEnv env = tessera::ReadLaunchEnv();
    if (env.source == "Slurm" && env.world_size > 1 && !env.slurm_batch_step &&
        std::getenv("PMIX_RANK") == nullptr) {
      return FailBeforeStart(std::string(tessera::CheckLaunchEnv(env, env.rank, 1).message()));
    }
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  }
#endif
  const int code = Run(command, requested, *run_config, mpi);
#if defined(TESSERA_WITH_MPI)
  if (mpi) MPI_Finalize();
#endif
  return code;
}
