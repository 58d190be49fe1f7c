#include "launcher/methods/method_availability.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tessera {

absl::Status CheckMethodsAvailable(const config::MethodSettings& m) {
  struct Method {
    bool present;
    const char* field;  // as in the run config: method.<field>
    const char* name;   // as users know it
  };
  const Method methods[] = {
      {m.has_early_exit(), "early_exit", "Early exit"},
      {m.has_sparse_attention(), "sparse_attention", "Sparse attention (Top-theta / Top-k)"},
      {m.has_homer(), "homer", "HOMER"},
      {m.has_harp(), "harp", "HARP"},
      {m.has_beacon(), "beacon", "Activation Beacon"}};
  std::vector<std::string> missing;
  for (const Method& method : methods) {
    if (!method.present) continue;
    // No method is built yet: every one present is reported.
    missing.push_back(absl::StrCat(
        "method.", method.field, ": ", method.name,
        " is not built in this version of Tessera (Unimplemented); remove it from the run "
        "config (the method section of --config, the --method file, or --set method.",
        method.field, ".*)"));
  }
  if (missing.empty()) return absl::OkStatus();
  return absl::UnimplementedError(absl::StrJoin(missing, "\n"));
}

}  // namespace tessera
