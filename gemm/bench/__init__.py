"""The peer benchmark behind ``gemm bench``: the tuned op against cuBLAS, the classic Triton config and bf16.

measure (cold-L2 CUDA-graph timing, ceilings, floors), peers (what is timed at a
point, on which device), run (the loop that verifies, times and writes CSVs),
tables (summaries of the rows), runs, report and plots (the markdown report).
"""
