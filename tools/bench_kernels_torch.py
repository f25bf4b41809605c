"""PyTorch's side of `cargo run --release -p semi-diffusion --example kernels`: the same SD-1.5
layer shapes (f32, 2 threads, best of several runs), printed in the same format.

    python3 tools/bench_kernels_torch.py
"""
import torch, time, torch.nn.functional as F
torch.set_num_threads(2)
def tm(name, flop, f):
    with torch.inference_mode():
        f(); best=1e9
        reps=int(min(50,max(3,3e10/max(flop,1e8))))
        for _ in range(reps):
            t=time.perf_counter(); f(); best=min(best,time.perf_counter()-t)
    print(f"{name:40} {best*1e3:8.2f} ms {flop/best/1e9:6.0f} GFLOP/s")
for c,s in [(320,64),(640,32),(1280,16),(1280,8),(128,256),(256,128),(512,64)]:
    x=torch.randn(1,c,s,s); w=torch.randn(c,c,3,3)*0.05; b=torch.randn(c)
    tm(f"conv3x3 {c}x{s}x{s}",2.0*c*c*9*s*s,lambda: F.conv2d(x,w,b,padding=1))
    g=torch.ones(c)
    tm(f"groupnorm+silu {c}x{s}x{s}",c*s*s,lambda: F.silu(F.group_norm(x,32,g,b,1e-5)))
for n,c,h,nk in [(4096,320,8,4096),(1024,640,8,1024),(256,1280,8,256),(4096,320,8,77),(4096,512,1,4096)]:
    q=torch.randn(1,h,n,c//h); k=torch.randn(1,h,nk,c//h); v=torch.randn(1,h,nk,c//h)
    tm(f"attention {n}x{nk} c{c} h{h}",4.0*n*nk*c,lambda: F.scaled_dot_product_attention(q,k,v))
for n,i,o in [(4096,320,320),(4096,320,2560),(4096,1280,320),(1024,640,640),(1024,640,5120),(77,768,320),(77,768,3072)]:
    x=torch.randn(1,n,i); w=torch.randn(o,i)*0.05; b=torch.randn(o)
    tm(f"linear {n}x{i}->{o}",2.0*n*i*o,lambda: F.linear(x,w,b))
    if o>=2560:
        y=F.linear(x,w,b)
        tm(f"geglu {n}x{o}",n*o,lambda: (lambda a,g: a*F.gelu(g))(*y.chunk(2,-1)))
