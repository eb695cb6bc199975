// Small helpers every custom op of the library shares: status messages, a node's label for error messages, and
// the custom-op records onnxruntime is handed.
#pragma once

#include <cstring>
#include <exception>
#include <stdexcept>
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

// The compute entry points of a kernel class K with members `api` (const Api*), `node` (its label) and
// `Status* compute(KernelContext*) const`: V2 turns an exception (std::bad_alloc of a shape vector) into a status.
template <class K>
Status* compute_v2(void* kernel, KernelContext* ctx) {
  const K* k = static_cast<const K*>(kernel);
  try {
    return k->compute(ctx);
  } catch (const std::exception& e) {
    return k->api->CreateStatus(ORT_FAIL, (k->node + ": " + e.what()).c_str());
  }
}

// onnxruntime 1.16 knows C API 16 but not the V2 entry points (those arrive in 1.17): it calls these V1 ones
// instead. Their only error channel is a C++ exception, which onnxruntime catches (it shares libstdc++ with us)
// and turns into a failed session creation / Run; onnxruntime >= 1.17 never calls them.
template <Status* (*CreateV2)(const CustomOp*, const Api*, const KernelInfo*, void**)>
void* create_kernel_v1(const CustomOp* op, const Api* api, const KernelInfo* info) {
  void* kernel = nullptr;
  if (Status* st = CreateV2(op, api, info, &kernel)) throw std::runtime_error(take_message(api, st));
  return kernel;
}

template <class K>
void compute_v1(void* kernel, KernelContext* ctx) {
  if (Status* st = compute_v2<K>(kernel, ctx)) {
    throw std::runtime_error(take_message(static_cast<const K*>(kernel)->api, st));
  }
}

template <class K>
void destroy_kernel(void* kernel) {
  delete static_cast<K*>(kernel);
}

}  // namespace dkp_ort

namespace dkp {

// The custom-op record of ai.dkp::LSTMCell (lstm_cell_op.cc), for RegisterCustomOps to add to the domain.
const dkp_ort::CustomOp* lstm_cell_custom_op();

}  // namespace dkp
