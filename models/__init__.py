"""Model families (one file each), shared blocks (`layers`) and likelihoods (`distributions`)."""
