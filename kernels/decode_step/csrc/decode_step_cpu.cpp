// The δ-mem memory work of inference passes on the CPU, as native ops (float32 only: the embedded model's dtype;
// the Python side sends other dtypes and every pass that needs gradients down the PyTorch path):
// - decode_step_cpu: one token per sequence: projection, activations, read and write. At batch 1 the PyTorch
//   path is ~15 tensor operations per layer whose dispatch costs far more than the ~18k multiply-adds they do.
// - decode_layer_cpu: a decode layer's memory work in one call: q_proj's GEMM extended by the memory projection's
//   rows, the step and both low-rank corrections.
// - scan_cpu: T tokens per sequence (prefill and memory writes): one GEMM for the projection, then the tokens in
//   order. The state is r×r, so the sequential loop is a few hundred flops per token and beats the chunked
//   PyTorch scan, whose cost is the dispatch of its many small operations.
// Registered as torch.ops.deltamem.*.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

namespace {

constexpr float kL2Eps = 1e-6f;
constexpr int64_t kLoopRows = 2;  // up to this many rows the projection runs as dot products here
constexpr int64_t kLanes = 8;     // independent partial sums, so the compiler can vectorise without reassociating

float dot(const float* a, const float* b, int64_t n) {
  float acc[kLanes] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) acc[l] += a[i + l] * b[i + l];
  }
  float total = 0.f;
  for (int64_t l = 0; l < kLanes; ++l) total += acc[l];
  for (; i < n; ++i) total += a[i] * b[i];
  return total;
}

void tanh_l2_normalise(float* v, int64_t n) {
  float sum_sq = 0.f;
  for (int64_t i = 0; i < n; ++i) {
    v[i] = std::tanh(v[i]);
    sum_sq += v[i] * v[i];
  }
  const float norm = std::max(std::sqrt(sum_sq), kL2Eps);
  for (int64_t i = 0; i < n; ++i) v[i] /= norm;
}

// One token of one sequence: `pre` holds its projection [q | k | v | gate] (4·N·r, q and k activated in place),
// `s` its N r×r states (updated in place: each row is read before it is written), `reads` receives S_prev·q.
void token_step(float* pre, const float* bias, float* s, float* reads, float writes, int64_t heads, int64_t rank) {
  const int64_t width = heads * rank;
  for (int64_t n = 0; n < heads; ++n) {
    float* q = pre + n * rank;
    float* k = pre + width + n * rank;
    const float* v = pre + 2 * width + n * rank;
    const float* gate = pre + 3 * width + n * rank;
    tanh_l2_normalise(q, rank);
    tanh_l2_normalise(k, rank);
    float* block = s + n * rank * rank;
    for (int64_t i = 0; i < rank; ++i) {
      const float beta = writes / (1.f + std::exp(-(gate[i] + bias[n * rank + i])));
      float* row = block + i * rank;
      float read = 0.f, s_k = 0.f;
      for (int64_t j = 0; j < rank; ++j) {
        read += row[j] * q[j];
        s_k += row[j] * k[j];
      }
      reads[n * rank + i] = read;
      const float keep = 1.f - beta, add = beta * (v[i] - s_k);
      for (int64_t j = 0; j < rank; ++j) row[j] = keep * row[j] + add * k[j];
    }
  }
}

void check_projection(const at::Tensor& weight, const at::Tensor& beta_bias, int64_t dim, int64_t width) {
  TORCH_CHECK(weight.scalar_type() == at::kFloat && weight.is_contiguous() && weight.dim() == 2 &&
                  weight.size(0) == 4 * width && weight.size(1) == dim,
              "weight must be contiguous float32 [4*N*r, d]");
  TORCH_CHECK(beta_bias.scalar_type() == at::kFloat && beta_bias.is_contiguous() && beta_bias.numel() == width,
              "beta_bias must be contiguous float32 [N*r]");
}

// The optional per-row write flags of a decode pass (nullptr: every row writes).
const bool* row_write_flags(const c10::optional<at::Tensor>& write, int64_t batch) {
  if (!write.has_value()) return nullptr;
  TORCH_CHECK(write->scalar_type() == at::kBool && write->is_contiguous() && write->numel() == batch,
              "write must be a contiguous bool [B]");
  return write->data_ptr<bool>();
}

// The state [B, N, r, r] copied into a new contiguous tensor (the input is never written).
at::Tensor copy_state(const at::Tensor& state, int64_t batch, int64_t heads, int64_t rank) {
  TORCH_CHECK(state.scalar_type() == at::kFloat && state.dim() == 4 && state.size(0) == batch &&
                  state.size(1) == heads && state.size(2) == rank && state.size(3) == rank,
              "state must be float32 [B, N, r, r]");
  at::Tensor copy = at::empty({batch, heads, rank, rank}, state.options().memory_format(at::MemoryFormat::Contiguous));
  copy.copy_(state);
  return copy;
}

std::tuple<at::Tensor, at::Tensor> decode_step_cpu(const at::Tensor& x, const at::Tensor& weight,
                                                   const at::Tensor& beta_bias, const at::Tensor& state,
                                                   const c10::optional<at::Tensor>& write, int64_t heads,
                                                   int64_t rank) {
  const int64_t batch = x.size(0), dim = x.size(1), width = heads * rank;
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(), "x must be contiguous float32 [B, d]");
  check_projection(weight, beta_bias, dim, width);
  const bool* write_ptr = row_write_flags(write, batch);
  at::Tensor new_state = copy_state(state, batch, heads, rank);
  at::Tensor reads = at::empty({batch, heads, rank}, x.options());
  // the projection: for a few rows plain dot products on this thread (a BLAS call may wake its thread pool,
  // which costs more than the ~18k multiply-adds of a row); for more rows one GEMM
  const bool small = batch <= kLoopRows;
  const at::Tensor projected = small ? at::Tensor() : at::mm(x, weight.t()).contiguous();  // [B, 4 * N * r]
  const float* xs = x.data_ptr<float>();
  const float* ws = weight.data_ptr<float>();
  std::vector<float> pre(4 * width);
  for (int64_t b = 0; b < batch; ++b) {
    if (small) {
      for (int64_t row = 0; row < 4 * width; ++row) pre[row] = dot(ws + row * dim, xs + b * dim, dim);
    } else {
      std::copy_n(projected.data_ptr<float>() + b * 4 * width, 4 * width, pre.data());
    }
    const float writes = write_ptr == nullptr || write_ptr[b] ? 1.f : 0.f;
    token_step(pre.data(), beta_bias.data_ptr<float>(), new_state.data_ptr<float>() + b * width * rank,
               reads.data_ptr<float>() + b * width, writes, heads, rank);
  }
  return {reads, new_state};
}

// T tokens per sequence, in order: x [B, T, d] → (reads [B, T, N, r], final state [B, N, r, r]). `write` [B, T]
// (optional) marks the tokens that write; the others read and leave the state as it is.
std::tuple<at::Tensor, at::Tensor> scan_cpu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& beta_bias,
                                            const at::Tensor& state, const c10::optional<at::Tensor>& write,
                                            int64_t heads, int64_t rank) {
  TORCH_CHECK(x.dim() == 3 && x.scalar_type() == at::kFloat, "x must be float32 [B, T, d]");
  const int64_t batch = x.size(0), tokens = x.size(1), dim = x.size(2), width = heads * rank;
  check_projection(weight, beta_bias, dim, width);
  const bool* write_ptr = nullptr;
  if (write.has_value()) {
    TORCH_CHECK(write->scalar_type() == at::kBool && write->is_contiguous() && write->dim() == 2 &&
                    write->size(0) == batch && write->size(1) == tokens,
                "write must be a contiguous bool [B, T]");
    write_ptr = write->data_ptr<bool>();
  }
  at::Tensor final_state = copy_state(state, batch, heads, rank);
  at::Tensor reads = at::empty({batch, tokens, heads, rank}, x.options());
  if (tokens == 0) return {reads, final_state};
  at::Tensor projected = at::mm(x.reshape({batch * tokens, dim}), weight.t()).contiguous();  // [B*T, 4*N*r]
  float* pre = projected.data_ptr<float>();
  float* out_reads = reads.data_ptr<float>();
  float* states = final_state.data_ptr<float>();
  const float* bias = beta_bias.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 0; t < tokens; ++t) {
      const int64_t at = b * tokens + t;
      const float writes = write_ptr == nullptr || write_ptr[at] ? 1.f : 0.f;
      token_step(pre + at * 4 * width, bias, states + b * width * rank, out_reads + at * width, writes, heads, rank);
    }
  }
  return {reads, final_state};
}

// out[j] += Σ_i coefficients[i] · rows[i][j] for rows [count, n] (row-major): axpys over contiguous rows, which
// vectorise, where the same sum as n dot products of length count (= N·r, often 8) would not.
void add_combination(float* out, const float* rows, const float* coefficients, int64_t count, int64_t n) {
  for (int64_t i = 0; i < count; ++i) {
    const float c = coefficients[i];
    const float* row = rows + i * n;
    for (int64_t j = 0; j < n; ++j) out[j] += c * row[j];
  }
}

// x·Wᵀ (+ bias) through oneDNN's GEMM (the op the backbone's linears use, runtime/cpu_linear.py) or ATen's linear.
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias, bool onednn) {
  if (!onednn) return at::linear(x, weight, bias);
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
  std::vector<c10::IValue> stack{x, weight, bias, std::string("none"), c10::List<c10::optional<at::Scalar>>(),
                                 std::string("")};
  op.callBoxed(&stack);
  return stack[0].toTensor();
}

// A decode layer's whole memory work in one call, GEMM included. `weight` is q_proj's extended by the memory
// projection's rows, [Wq; Wmem] [q_width + 4·N·r, d] (and `bias` q_proj's, zero-padded), so one GEMM gives each row
// of x [B, 1, d] its query and its memory pre-activations; folding the projection in spares a separate read of its
// weights, which at batch 1 come from DRAM each step (the backbone's weights stream through the caches). Then the
// step runs on `state` [B, N, r, r] (updated in place: the caller passes its own copy; rows need not be adjacent, so
// a layer's slice of a [B, L, N, r, r] pass state will do), the query correction scale·reads·Wdqᵀ is added to the
// query, and the call returns (query [B, 1, q_width], output correction scale·reads·Wdoᵀ [B, 1, D], shaped like
// o_proj's output). The correction weights come transposed: Wdqᵀ [N·r, q_width] and Wdoᵀ [N·r, D]. One call rather
// than a GEMM, this and a slice from Python: each call mid-step costs microseconds of cold dispatch.
std::tuple<at::Tensor, at::Tensor> decode_layer_cpu(const at::Tensor& x, const at::Tensor& weight,
                                                    const c10::optional<at::Tensor>& bias, at::Tensor state,
                                                    const c10::optional<at::Tensor>& write, int64_t q_width,
                                                    const at::Tensor& beta_bias, const at::Tensor& delta_q_t,
                                                    const at::Tensor& delta_o_t, double scale, int64_t heads,
                                                    int64_t rank, bool onednn) {
  const int64_t batch = x.size(0), width = heads * rank, columns = q_width + 4 * width;
  TORCH_CHECK(x.dim() == 3 && x.size(1) == 1 && x.scalar_type() == at::kFloat, "x must be float32 [B, 1, d]");
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kFloat && weight.size(0) == columns &&
                  weight.size(1) == x.size(2),
              "weight must be float32 [q_width + 4*N*r, d]");
  TORCH_CHECK(state.scalar_type() == at::kFloat && state.dim() == 4 && state.size(0) == batch &&
                  state.size(1) == heads && state.size(2) == rank && state.size(3) == rank && state.stride(3) == 1 &&
                  state.stride(2) == rank && state.stride(1) == rank * rank,
              "state must be float32 [B, N, r, r], each row's N r×r blocks contiguous");
  TORCH_CHECK(beta_bias.scalar_type() == at::kFloat && beta_bias.is_contiguous() && beta_bias.numel() == width,
              "beta_bias must be contiguous float32 [N*r]");
  for (const at::Tensor* correction : {&delta_q_t, &delta_o_t}) {
    TORCH_CHECK(correction->dim() == 2 && correction->scalar_type() == at::kFloat && correction->is_contiguous() &&
                    correction->size(0) == width,
                "transposed correction weights must be contiguous float32 [N*r, D]");
  }
  TORCH_CHECK(delta_q_t.size(1) == q_width, "the query correction must have q_width columns");
  const bool* write_ptr = row_write_flags(write, batch);
  at::Tensor both = linear(x, weight, bias, onednn).contiguous();  // [B, 1, q_width + 4·N·r]
  const int64_t out_width = delta_o_t.size(1);
  at::Tensor correction_o = at::empty({batch, 1, out_width}, x.options());
  const float factor = static_cast<float>(scale);
  float* states = state.data_ptr<float>();
  std::vector<float> reads(width);
  for (int64_t b = 0; b < batch; ++b) {
    float* row = both.data_ptr<float>() + b * columns;
    const float writes = write_ptr == nullptr || write_ptr[b] ? 1.f : 0.f;
    token_step(row + q_width, beta_bias.data_ptr<float>(), states + b * state.stride(0), reads.data(), writes, heads,
               rank);
    for (float& read : reads) read *= factor;
    add_combination(row, delta_q_t.data_ptr<float>(), reads.data(), width, q_width);
    float* out = correction_o.data_ptr<float>() + b * out_width;
    std::fill_n(out, out_width, 0.f);
    add_combination(out, delta_o_t.data_ptr<float>(), reads.data(), width, out_width);
  }
  return {both.narrow(2, 0, q_width), correction_o};
}

}  // namespace

TORCH_LIBRARY(deltamem, m) {
  m.def("decode_step_cpu(Tensor x, Tensor weight, Tensor beta_bias, Tensor state, Tensor? write, int heads, "
        "int rank) -> (Tensor, Tensor)");
  m.def("decode_layer_cpu(Tensor x, Tensor weight, Tensor? bias, Tensor(a!) state, Tensor? write, int q_width, "
        "Tensor beta_bias, Tensor delta_q_t, Tensor delta_o_t, float scale, int heads, int rank, bool onednn) -> "
        "(Tensor, Tensor)");
  m.def("scan_cpu(Tensor x, Tensor weight, Tensor beta_bias, Tensor state, Tensor? write, int heads, int rank) -> "
        "(Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(deltamem, CPU, m) {
  m.impl("decode_step_cpu", &decode_step_cpu);
  m.impl("decode_layer_cpu", &decode_layer_cpu);
  m.impl("scan_cpu", &scan_cpu);
}
