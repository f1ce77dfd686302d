"""`python -m biomed_llama …` is the CLI; `torchrun -m biomed_llama pretrain` uses this entry."""

from biomed_llama.cli import main

if __name__ == "__main__":
    main()
