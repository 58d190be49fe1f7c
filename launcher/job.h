// Job: this process's place in a (possibly multi-rank) run, set up once by main().
//
// Under mpirun or srun --mpi=pmix the world is MPI's, cross-checked with the launcher's
// environment; alone it is a single rank. The layout (--tp, --pp, --dp) is checked against the
// world size before anything else happens.
#ifndef TESSERA_LAUNCHER_JOB_H_
#define TESSERA_LAUNCHER_JOB_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "parallel/process_groups.h"

namespace tessera {

struct Job {
  ProcessGroups groups;
  bool mpi = false;     // MPI is initialised (main finalises it)
  int local_rank = 0;   // index among the ranks on this host (picks the GPU)

  const WorldLayout& layout() const { return groups.layout; }
  bool is_root() const { return groups.layout.rank == 0; }
};

// Whether this process should initialise MPI: built with MPI, and either the launcher started
// several processes or the requested layout has more than one rank.
bool WantMpi(const WorldLayout& requested);

// Builds the process groups. `mpi` says whether MPI was initialised by main().
absl::StatusOr<Job> StartJob(const WorldLayout& requested, bool mpi, absl::Duration timeout);

// The outcome of a phase that every rank ran: OK when all ranks succeeded. A communication
// failure (DeadlineExceeded, Unavailable, Aborted) ends the job at once (AbortJob). Otherwise
// every rank returns an error; the message is worth printing (`print`) on the lowest rank that failed with
// each distinct cause, so a cause shared by all ranks is printed once.
struct Outcome {
  absl::Status status;
  bool print = false;
};
Outcome AgreeOnOutcome(Job& job, const absl::Status& local);
// The same among the ranks of `group` only (e.g. one model replica), which must all call it.
Outcome AgreeOnOutcomeIn(Job& job, Communicator& group, const absl::Status& local);

// Prints `cause` with this rank's prefix and ends every rank of the job (MPI_Abort), for
// failures after which the communicators cannot be trusted (a timeout). Does not return.
[[noreturn]] void AbortJob(Job& job, const absl::Status& cause);

// AgreeOnOutcome as a Status for RETURN_IF_ERROR: errors that another rank prints are marked so
// that main() exits non-zero without printing them again.
absl::Status CheckPhase(Job& job, const absl::Status& local);
bool IsReportedElsewhere(const absl::Status& status);

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_JOB_H_
