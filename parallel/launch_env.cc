#include "parallel/launch_env.h"

#include <unistd.h>

#include <climits>
#include <cstdint>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "kernels/status_macros.h"

namespace tessera {
namespace {

// Reads integer variables through the injected getenv and records the ones present.
class EnvReader {
 public:
  explicit EnvReader(const std::function<const char*(const char*)>& getenv) : getenv_(getenv) {}

  bool Has(const char* name) const { return getenv_(name) != nullptr; }

  // The value, or -1 when absent or not a non-negative integer.
  int Int(const char* name) {
    const char* value = getenv_(name);
    if (value == nullptr) return -1;
    Note(name, value);
    int n = -1;
    if (!absl::SimpleAtoi(value, &n) || n < 0) return -1;
    return n;
  }

  // The first variable of `names` that is set, or nullptr.
  const char* First(std::initializer_list<const char*> names) const {
    for (const char* name : names) {
      if (Has(name)) return name;
    }
    return nullptr;
  }

  std::string String(const char* name) {
    const char* value = getenv_(name);
    if (value == nullptr) return "";
    Note(name, value);
    return value;
  }

  std::string variables() const { return variables_; }

 private:
  void Note(const char* name, const char* value) {
    absl::StrAppend(&variables_, variables_.empty() ? "" : " ", name, "=", value);
  }

  const std::function<const char*(const char*)>& getenv_;
  std::string variables_;
};

// Slurm's local task count for this node (-1 when unknown).
int SlurmLocalSize(EnvReader& env) {
  const char* name =
      env.First({"SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE", "SLURM_NTASKS_PER_NODE"});
  if (name == nullptr) return -1;
  const std::string spec = env.String(name);
  const int node_id = env.Int("SLURM_NODEID");
  return SlurmTasksOnNode(spec, node_id);
}

// Slurm's task count for the job step (SLURM_STEP_NUM_TASKS inside a step, else SLURM_NTASKS).
int SlurmSize(EnvReader& env) {
  if (env.Has("SLURM_STEP_NUM_TASKS")) return env.Int("SLURM_STEP_NUM_TASKS");
  if (env.Has("SLURM_NTASKS")) return env.Int("SLURM_NTASKS");
  return -1;
}

uint64_t Fnv1a64(absl::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

int SlurmTasksOnNode(const std::string& tasks_per_node, int node_id) {
  // "2(x3),1" -> {2, 2, 2, 1}.
  std::vector<int> counts;
  for (absl::string_view entry : absl::StrSplit(tasks_per_node, ',')) {
    int count = 0, repeat = 1;
    const size_t paren = entry.find('(');
    if (paren == absl::string_view::npos) {
      if (!absl::SimpleAtoi(entry, &count)) return -1;
    } else {
      absl::string_view rep = entry.substr(paren + 1);
      if (!absl::SimpleAtoi(entry.substr(0, paren), &count) || !absl::ConsumePrefix(&rep, "x") ||
          !absl::ConsumeSuffix(&rep, ")") || !absl::SimpleAtoi(rep, &repeat) || repeat < 1 ||
          repeat > 1000000) {
        return -1;
      }
    }
    if (count < 1) return -1;
    counts.insert(counts.end(), repeat, count);
  }
  if (counts.empty()) return -1;
  if (node_id < 0) {
    // Without SLURM_NODEID the count is known only when every node has the same.
    for (int c : counts) {
      if (c != counts[0]) return -1;
    }
    return counts[0];
  }
  if (node_id >= static_cast<int>(counts.size())) {
    // "--ntasks-per-node=4" is one number for every node.
    return counts.size() == 1 ? counts[0] : -1;
  }
  return counts[node_id];
}

LaunchEnv ReadLaunchEnv(const std::function<const char*(const char*)>& getenv) {
  EnvReader env(getenv);
  LaunchEnv out;
  if (env.Has("OMPI_COMM_WORLD_RANK")) {
    out.source = "Open MPI";
    out.rank = env.Int("OMPI_COMM_WORLD_RANK");
    out.world_size = env.Int("OMPI_COMM_WORLD_SIZE");
    out.local_rank = env.Int("OMPI_COMM_WORLD_LOCAL_RANK");
    out.local_size = env.Int("OMPI_COMM_WORLD_LOCAL_SIZE");
  } else if (env.Has("PMI_RANK")) {
    out.source = "MPICH/Hydra";
    out.rank = env.Int("PMI_RANK");
    out.world_size = env.Int("PMI_SIZE");
    out.local_rank = env.Int("MPI_LOCALRANKID");
    out.local_size = env.Int("MPI_LOCALNRANKS");
  } else if (env.Has("SLURM_PROCID")) {
    // Under `srun --mpi=pmix` PMIX_RANK equals SLURM_PROCID.
    out.source = "Slurm";
    out.rank = env.Int("SLURM_PROCID");
    out.world_size = SlurmSize(env);
    out.local_rank = env.Int("SLURM_LOCALID");
    out.local_size = SlurmLocalSize(env);
    out.slurm_batch_step = !env.Has("SLURM_STEP_ID") && !env.Has("SLURM_STEPID");
  } else if (env.Has("PMIX_RANK")) {
    // A PMIx launcher other than Slurm (prterun), or an Open MPI singleton after MPI_Init.
    // PMIx exports no size variable.
    out.source = "PMIx";
    out.rank = env.Int("PMIX_RANK");
  } else {
    return out;  // single process
  }
  out.variables = env.variables();
  // A local rank outside the local size is inconsistent; let LocalRankFromHostnames decide.
  if (out.local_size >= 0 && out.local_rank >= out.local_size) out.local_rank = -1;
  return out;
}

absl::Status CheckLaunchEnv(const LaunchEnv& env, int mpi_rank, int mpi_size) {
  if (env.single_process()) return absl::OkStatus();
  const bool size_differs = env.world_size >= 0 && env.world_size != mpi_size;
  const bool rank_differs = env.rank >= 0 && env.rank != mpi_rank;
  if (!size_differs && !rank_differs) return absl::OkStatus();

  const std::string views = absl::StrCat(
      "the launcher (", env.source, ": ", env.variables, ") started this process as rank ",
      env.rank, " of ", env.world_size, ", but MPI reports rank ", mpi_rank, " of ", mpi_size);
  std::string fix;
  if (mpi_size == 1 && env.world_size > 1) {
    // Every process is its own MPI world: the launcher did not wire up MPI.
    if (env.source == "Slurm" && env.slurm_batch_step) {
      fix = absl::StrCat(
          "the binary was run directly by the batch script (Slurm's batch step is one process) "
          "in a job of ",
          env.world_size,
          " tasks; start it inside the script with "
          "`srun --mpi=pmix <binary> ...` so that Slurm starts every rank");
    } else if (env.source == "Slurm") {
      fix = absl::StrCat(
          "srun started ", env.world_size,
          " tasks but each has its own single-rank MPI world "
          "because srun did not connect them through PMIx; start the ranks with "
          "`srun --mpi=pmix` (see `srun --mpi=list`, or set MpiDefault=pmix in slurm.conf), or "
          "use `mpirun -np ",
          env.world_size, "`");
    } else {
      fix = absl::StrCat(
          "each process started its own single-rank MPI world: the binary was likely started by "
          "another MPI's launcher (",
          env.source,
          ") than the MPI it is linked against; use the mpirun of the MPI Tessera was built with");
    }
  } else {
    fix = absl::StrCat(
        "the binary may be linked against a different MPI than the launcher that started it (",
        env.source, "); use the matching mpirun, or `srun --mpi=pmix` under Slurm");
  }
  return absl::FailedPreconditionError(absl::StrCat(views, ": ", fix));
}

absl::StatusOr<int> LocalRankFromHostnames(Communicator& world) {
  char host[HOST_NAME_MAX + 1] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) {
    return absl::UnavailableError(absl::StrCat(world.name(), " rank ", world.rank(),
                                               ": gethostname failed; set the launcher's local "
                                               "rank variable (e.g. OMPI_COMM_WORLD_LOCAL_RANK)"));
  }
  // A 64-bit hash as two int32 words per rank.
  const uint64_t hash = Fnv1a64(host);
  int32_t mine[2] = {static_cast<int32_t>(hash & 0xffffffffu), static_cast<int32_t>(hash >> 32)};
  std::vector<int32_t> all(2 * static_cast<size_t>(world.size()));
  RETURN_IF_ERROR(world.AllGather(TensorView::Of(mine, DType::kI32, {2}),
                                  TensorView::Of(all.data(), DType::kI32, {world.size(), 2})));
  int local_rank = 0;
  for (int r = 0; r < world.rank(); ++r) {
    if (all[2 * r] == mine[0] && all[2 * r + 1] == mine[1]) ++local_rank;
  }
  return local_rank;
}

}  // namespace tessera
