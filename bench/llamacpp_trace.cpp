// llama-simple's greedy loop, plus an eval callback that writes every F32/F16 tensor the graph
// computes to DIR/<step>/<seq>_<name>.bin (header: int32 ggml type, 4 x int64 ne; then the values
// as float32, row-major over ne[0] fastest). Step 0 is the prompt batch, step k the k-th decode.
// Built and driven by bench/llamacpp_trace.py; used to find the first op where ggq and llama.cpp
// part ways.
#include "llama.h"
#include "ggml.h"
#include "ggml-backend.h"

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>
#include <sys/stat.h>

struct trace_state {
    std::string dir;
    int step = 0;
    int seq = 0;
    int max_step = 0;
};

static float value_at(const ggml_tensor * t, const char * base, int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
    const char * p = base + i0 * t->nb[0] + i1 * t->nb[1] + i2 * t->nb[2] + i3 * t->nb[3];
    if (t->type == GGML_TYPE_F16) {
        return ggml_fp16_to_fp32(*(const ggml_fp16_t *) p);
    }
    return *(const float *) p;
}

static bool on_tensor(ggml_tensor * t, bool ask, void * user_data) {
    auto * st = (trace_state *) user_data;
    if (ask) {
        return true;
    }
    if (st->step > st->max_step || (t->type != GGML_TYPE_F32 && t->type != GGML_TYPE_F16)) {
        return true;
    }
    std::vector<char> raw(ggml_nbytes(t));
    ggml_backend_tensor_get(t, raw.data(), 0, raw.size());
    std::string sub = st->dir + "/" + std::to_string(st->step);
    mkdir(sub.c_str(), 0755);
    char fname[512];
    snprintf(fname, sizeof fname, "%s/%04d_%s.bin", sub.c_str(), st->seq++, t->name);
    FILE * f = fopen(fname, "wb");
    if (!f) {
        return true;
    }
    int32_t type = t->type;
    fwrite(&type, sizeof type, 1, f);
    fwrite(t->ne, sizeof(int64_t), 4, f);
    std::vector<float> row(t->ne[0]);
    for (int64_t i3 = 0; i3 < t->ne[3]; i3++) {
        for (int64_t i2 = 0; i2 < t->ne[2]; i2++) {
            for (int64_t i1 = 0; i1 < t->ne[1]; i1++) {
                for (int64_t i0 = 0; i0 < t->ne[0]; i0++) {
                    row[i0] = value_at(t, raw.data(), i0, i1, i2, i3);
                }
                fwrite(row.data(), sizeof(float), row.size(), f);
            }
        }
    }
    fclose(f);
    return true;
}

static void set_tokens(llama_batch_ext * batch, const llama_token * tokens, int32_t n, llama_pos pos0) {
    llama_batch_ext_clear(batch);
    for (int32_t i = 0; i < n; ++i) {
        const int32_t idx = llama_batch_ext_add_token(batch, 0, tokens[i]);
        const llama_pos pos = pos0 + i;
        llama_batch_ext_set_pos(batch, idx, &pos);
    }
    llama_batch_ext_set_output_logits(batch, n - 1, true);
}

int main(int argc, char ** argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s MODEL DIR N_PREDICT MAX_TRACE_STEP PROMPT\n", argv[0]);
        return 1;
    }
    trace_state st;
    st.dir = argv[2];
    const int n_predict = atoi(argv[3]);
    st.max_step = atoi(argv[4]);
    const std::string prompt = argv[5];
    mkdir(st.dir.c_str(), 0755);

    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        return 1;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_prompt = -llama_tokenize(vocab, prompt.c_str(), prompt.size(), NULL, 0, true, true);
    std::vector<llama_token> toks(n_prompt);
    llama_tokenize(vocab, prompt.c_str(), prompt.size(), toks.data(), toks.size(), true, true);

    // the same context as llama-simple, with the callback added
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_prompt + n_predict - 1;
    cp.n_batch = n_prompt;
    cp.cb_eval = on_tensor;
    cp.cb_eval_user_data = &st;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        return 1;
    }
    llama_sampler * smpl = llama_sampler_chain_init(llama_sampler_chain_default_params());
    llama_sampler_chain_add(smpl, llama_sampler_init_greedy());

    llama_batch_ext * batch = llama_batch_ext_init(ctx);
    set_tokens(batch, toks.data(), n_prompt, 0);
    int n_tokens = n_prompt;
    for (int n_pos = 0; n_pos + n_tokens < n_prompt + n_predict;) {
        if (llama_process(ctx, LLAMA_PROCESS_TYPE_DECODE, batch)) {
            return 1;
        }
        n_pos += n_tokens;
        llama_token id = llama_sampler_sample(smpl, ctx, -1);
        printf("%d\n", id);
        if (llama_vocab_is_eog(vocab, id)) {
            break;
        }
        st.step++;
        st.seq = 0;
        set_tokens(batch, &id, 1, n_pos);
        n_tokens = 1;
    }
    llama_batch_ext_free(batch);
    llama_sampler_free(smpl);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
