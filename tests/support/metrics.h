#pragma once
// Reading a registry the way Prometheus would: through the text exposition format.

#include <string>
#include <vector>

#include "prometheus/registry.h"

namespace chasqui::testing {

// The value of the first series `name` whose label text contains every `label="value"`
// fragment, or -1 when there is none.
double SeriesValue(prometheus::Registry& registry, const std::string& name,
                   const std::vector<std::string>& label_fragments);
std::string ExpositionText(prometheus::Registry& registry);

}  // namespace chasqui::testing
