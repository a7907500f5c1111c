"""Score networks: DDPM, NCSN++/DDPM++ and a residual MLP for toy data; official import."""
