// The LSTM cell behind ai.dkp::LSTMCell, free of any onnxruntime type: the gates' nonlinearities and the state
// update of one step, in one pass over the gates.
#pragma once

#include <cstdint>

namespace dkp {

// For each of `rows` rows: gates [4H] in torch's order (i, f, g, o), c [H] the previous cell state;
//   c_out = sigmoid(f) * c + sigmoid(i) * tanh(g),  h_out = sigmoid(o) * tanh(c_out).
// sigmoid and tanh are evaluated in float32 to a few ulp (exp by range reduction and a degree-7 polynomial; tanh
// of |x| < 0.5 by its odd series), NaN in, NaN out. Outputs may not alias the inputs.
void lstm_cell(const float* gates, const float* c, int64_t rows, int64_t h, float* h_out, float* c_out);

// Which vectors lstm_cell uses on this CPU ("avx512f", "avx2+fma" or "generic"; DKP_OPS_ISA caps it like the
// sparse kernels).
const char* lstm_cell_isa();

}  // namespace dkp
