"""`python -m cvlab ...`: what torchrun starts (`torchrun --nproc-per-node N -m cvlab train EXP.yaml`)."""

from .cli import main

if __name__ == "__main__":
    main()
