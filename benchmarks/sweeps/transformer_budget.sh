# Sourced by gpu_session.sh (SWEEP_FILE=benchmarks/sweeps/transformer_budget.sh PARTS=1,...): the class-everywhere
# pixel transformer at the quick preset's 18k images, spent as more, smaller steps or a higher learning rate.
sweep tr-every-x2-b8 transformer --set model.class_every=true train.steps=2240 train.batch_size=8
sweep tr-every-lr6 transformer --set model.class_every=true train.lr=6e-3
sweep tr-every-x4-b4 transformer --set model.class_every=true train.steps=4480 train.batch_size=4
