// Small helpers every custom op of the library shares: status messages, a node's label for error messages, and
// the custom-op records onnxruntime is handed.
#pragma once

#include <cstring>
#include <string>

#include "ort_abi.h"

namespace dkp_ort {

// Releases a status we only inspect, and keeps its message.
inline std::string take_message(const Api* api, Status* st) {
  std::string msg = api->GetErrorMessage(st);
  api->ReleaseStatus(st);
  return msg;
}

// "<op> node '<name>'" (or "<op> node" for a node without a name): how error messages name the node.
inline std::string node_label(const Api* api, const KernelInfo* info, const char* op) {
  std::string label = std::string(op) + " node";
  size_t size = 0;
  if (Status* st = api->KernelInfo_GetNodeName(info, nullptr, &size)) {
    api->ReleaseStatus(st);
  } else if (size > 0) {
    std::string name(size, '\0');
    if (Status* st2 = api->KernelInfo_GetNodeName(info, name.data(), &size)) {
      api->ReleaseStatus(st2);
    } else {
      name.resize(std::strlen(name.c_str()));
      label += " '" + name + "'";
    }
  }
  return label;
}

}  // namespace dkp_ort

namespace dkp {

// The custom-op record of ai.dkp::LSTMCell (lstm_cell_op.cc), for RegisterCustomOps to add to the domain.
const dkp_ort::CustomOp* lstm_cell_custom_op();

}  // namespace dkp
