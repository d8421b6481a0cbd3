#include "tests/support/metrics.h"

#include <sstream>

#include "prometheus/text_serializer.h"

namespace chasqui::testing {

std::string ExpositionText(prometheus::Registry& registry) {
  return prometheus::TextSerializer().Serialize(registry.Collect());
}

double SeriesValue(prometheus::Registry& registry, const std::string& name,
                   const std::vector<std::string>& label_fragments) {
  std::istringstream lines(ExpositionText(registry));
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(name + "{", 0) != 0) continue;
    bool all = true;
    for (const std::string& f : label_fragments) {
      if (line.find(f) == std::string::npos) {
        all = false;
        break;
      }
    }
    if (all) return std::stod(line.substr(line.rfind(' ') + 1));
  }
  return -1;
}

}  // namespace chasqui::testing
