"""bench.py's predict and evaluate tasks as a user of stock Keras or of PyTorch writes them, no
mnistlab: load the saved model, predict, print one JSON line.

  python infer.py keras MODEL.keras predict DIGIT.npy     the digit of one 28x28 uint8 image
  python infer.py keras MODEL.keras evaluate DATA/mnist   test accuracy on the 10,000 test images
  python infer.py torch STATE.pt predict|evaluate ...     the same, peer_torch.py's DNN from a state dict
  python infer.py weights MODEL.keras OUT.npz             (setup, Keras) the DNN's weights as arrays
  python infer.py state OUT.npz STATE.pt                  (setup, torch) those weights as a state dict

The torch model is peer_torch.py's dnn() holding the Keras model's own weights, so all sides answer
alike. Stock Keras runs on JAX (KERAS_BACKEND=jax), as mnistlab does. Each side reads what it needs
itself: NumPy for the picture, gzip + NumPy for the IDX test set.
"""

import gzip
import json
import os
import sys
import time

T0 = time.perf_counter()
import numpy as np

TORCH_LINEAR = ("0", "2", "5")  # the Linear layers' indexes in peer_torch.dnn()'s Sequential


def test_set(folder):
    with gzip.open(os.path.join(folder, "t10k-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read()[16:], np.uint8).reshape(-1, 784)
    with gzip.open(os.path.join(folder, "t10k-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read()[8:], np.uint8)
    return x.astype(np.float32) / 255, y


def inputs(task, source):
    if task == "predict":
        return np.load(source).reshape(-1, 784).astype(np.float32) / 255, None
    return test_set(source)


def keras_answers(model_file, x):
    import keras

    return np.asarray(keras.saving.load_model(model_file).predict(x, batch_size=1000, verbose=0))


def torch_answers(state_file, x):
    import torch

    sys.path.insert(0, os.environ["PEER_DIR"])
    from peer_torch import dnn

    model = dnn()
    model.load_state_dict(torch.load(state_file))
    model.eval()
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def save_weights(model_file, out):
    import keras

    dense = [layer for layer in keras.saving.load_model(model_file).layers if layer.weights]
    np.savez(out, **{f"{i}.{k}": w for i, layer in zip(TORCH_LINEAR, dense) for k, w in zip("wb", layer.get_weights())})


def save_state(weights, out):
    import torch

    arrays = np.load(weights)
    state = {}
    for i in TORCH_LINEAR:  # Keras' Dense kernels are (in, out), torch's Linear weights (out, in)
        state[f"{i}.weight"] = torch.from_numpy(arrays[f"{i}.w"].T.copy())
        state[f"{i}.bias"] = torch.from_numpy(arrays[f"{i}.b"])
    torch.save(state, out)


def main():
    framework, model_file, *rest = sys.argv[1:]
    if framework in ("weights", "state"):
        (save_weights if framework == "weights" else save_state)(model_file, rest[0])
        return
    task, source = rest
    x, y = inputs(task, source)
    scores = (keras_answers if framework == "keras" else torch_answers)(model_file, x)
    if task == "predict":
        answer = {"digit": int(scores[0].argmax())}
    else:
        answer = {"test_accuracy": float((scores.argmax(1) == y).mean())}
    print(json.dumps({**answer, "wall_s": round(time.perf_counter() - T0, 3)}))


if __name__ == "__main__":
    main()
