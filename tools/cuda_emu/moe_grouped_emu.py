#!/usr/bin/env python3
# moe_grouped_emu.py — a lane-level transliteration of the grouped MoE kernels (src/backend/cuda/kernels/
# moe_grouped.cu) in plain Python, for checking their index math without a GPU: the sort (16 warps x 32 lanes,
# match_any groups, per-warp prefixes) against a stable host sort; the GEMM grid's K partition; and the
# expert GEMM (weight fragments, FP4 quad transpose + e2m1 -> e4m3 byte permutes, mma.m16n8k32 fragment
# layouts of the PTX ISA, gathered B rows, slice reduction, epilogue mapping) against a direct float64
# block-scaled dot product, for FP4 / FP8, NM = 2 (w1+w3) and 1 (w2), NT = 1, 2, 4, ks = 1, 2.
# Run by hand after editing the kernels (python3 tools/cuda_emu/moe_grouped_emu.py, ~1 min); it is not part
# of the test suite and says nothing about timing or the hardware's FP32 accumulation order. The GPU op test
# is tests/unit/test_cuda_moe.c.
import random
SW=16; MAXE=512
def sort_emu(experts, e0, ne, bt, max_tiles):
    pairs=len(experts)
    cnt=[[0]*MAXE for _ in range(SW)]
    seg=(pairs+SW-1)//SW
    def local(i,end):
        if i>=end: return -1
        e=experts[i]-e0
        return e if 0<=e<ne else -1
    for w in range(SW):
        s0=w*seg; s1=min(pairs,s0+seg)
        b=s0
        while b<s1:
            es=[local(b+l,s1) for l in range(32)]
            for l in range(32):
                e=es[l]; peers=[x for x in range(32) if es[x]==e]
                if e>=0 and l==peers[0]: cnt[w][e]+=len(peers)
            b+=32
    tot=[0]*(SW*32)
    for tid in range(SW*32):
        if tid<ne:
            t=0
            for ww in range(SW):
                c=cnt[ww][tid]; cnt[ww][tid]=t; t+=c
            tot[tid]=t
    v=[(tot[t]<<32)|((tot[t]+bt-1)//bt) for t in range(SW*32)]
    # block exclusive scan (same result as warp scans)
    excl=[];acc=0
    for x in v: excl.append(acc); acc+=x
    n_live=acc>>32; n_tiles=min(acc&0xffffffff,max_tiles)
    first=[0]*MAXE; tiles={}
    for tid in range(ne):
        f0=excl[tid]>>32; tile0=excl[tid]&0xffffffff; first[tid]=f0
        nt=(tot[tid]+bt-1)//bt
        for i in range(nt):
            if tile0+i<max_tiles: tiles[tile0+i]=(tid,f0+i*bt,min(bt,tot[tid]-i*bt))
    sorted_=[None]*pairs
    for w in range(SW):
        s0=w*seg; s1=min(pairs,s0+seg); b=s0
        while b<s1:
            es=[local(b+l,s1) for l in range(32)]
            bases=[cnt[w][es[l]] if es[l]>=0 else 0 for l in range(32)]
            for l in range(32):
                e=es[l]
                if e>=0:
                    rank=sum(1 for x in range(l) if es[x]==e)
                    sorted_[first[e]+bases[l]+rank]=b+l
            for l in range(32):
                e=es[l]; peers=[x for x in range(32) if es[x]==e]
                if e>=0 and l==peers[0]: cnt[w][e]=bases[l]+len(peers)
            b+=32
    return n_live,n_tiles,[tiles[i] for i in range(n_tiles)],sorted_[:n_live]
def ref(experts,e0,ne,bt):
    live=[];tiles=[]
    for e in range(ne):
        f=len(live)
        live+=[i for i,x in enumerate(experts) if x-e0==e]
        s=f
        while s<len(live):
            tiles.append((e,s,min(bt,len(live)-s))); s+=bt
    return len(live),len(tiles),tiles,live
random.seed(1)
for trial in range(300):
    pairs=random.choice([1,2,5,31,32,33,100,517,1000,3000])
    E=random.choice([1,2,7,8,64,256,384,512])
    e0=random.choice([0,0,0,E//4]); ne=max(1,min(E-e0, random.choice([E,E//2,3])))
    bt=random.choice([8,16,32])
    hot=min(E,5)
    ex=[-1 if random.random()<0.02 else (random.randrange(hot) if random.random()<0.5 else random.randrange(E)) for _ in range(pairs)]
    mt=pairs//bt+min(ne,pairs)
    a=sort_emu(ex,e0,ne,bt,mt); r=ref(ex,e0,ne,bt)
    assert a==r,(trial,pairs,E,e0,ne,bt)
print("sort emulation ok")
# GEMM grid coverage
def moe_ks(K):
    KB=K//128; ks=1
    while ks*2<=8 and KB//(ks*2)>=8: ks*=2
    return ks
for (N,K) in [(2048,4096),(4096,2048),(128,256),(256,128),(384,3200),(3200,384),(256,1024),(1024,256),(4096,7168)]:
    KB=K//128; ks=moe_ks(K); rpc=8//ks; kpw=(KB+ks-1)//ks
    gx=N//(16*rpc)
    assert N%(16*rpc)==0
    cov={}
    for bx in range(gx):
        for warp in range(8):
            rt=warp%rpc; sl=warp//rpc; n0=(bx*rpc+rt)*16
            kb0=sl*kpw; kb1=min(KB,kb0+kpw)
            for n in range(n0,n0+16):
                cov.setdefault(n,[]).append((kb0,max(kb0,kb1),sl))
    for n in range(N):
        rs=sorted(cov[n]); 
        # partition of [0,KB)
        pos=0
        for (a,b,sl) in rs:
            if a>=KB: continue
            assert a==pos,(N,K,n,rs); pos=b
        assert pos==KB
        assert len([1 for r in rs if r[2]==0])==1
    print("grid ok", N,K,"ks",ks,"kpw",kpw,"ctas/tile",gx)

random.seed(7)
def e4m3(c):
    s=-1.0 if c&0x80 else 1.0; e=(c>>3)&15; m=c&7
    if e==15 and m==7: return float('nan')
    if e==0: return s*m/8*2**-6
    return s*(1+m/8)*2**(e-7)
E2M1=[0,.5,1,1.5,2,3,4,6]
def e2m1(c): v=E2M1[c&7]; return -v if c&8 else v
def e8m0(c): return 2.0**(c-127) if c else 2.0**-127
def byte_perm(x,y,s):
    b=[(x>>(8*i))&255 for i in range(4)]+[(y>>(8*i))&255 for i in range(4)]
    r=0
    for i in range(4):
        sel=(s>>(4*i))&7
        r|=b[sel]<<(8*i)
    return r
def fp4x8_to_e4m3(w):
    m=w&0x77777777; s=(w>>3)&0x11111111
    lo=byte_perm(0x3C383000,0x4C484440,m)|byte_perm(0x00008000,0,s)
    hi=byte_perm(0x3C383000,0x4C484440,m>>16)|byte_perm(0x00008000,0,s>>16)
    return lo,hi
# check the expansion
for c in range(16):
    w=c
    lo,hi=fp4x8_to_e4m3(w)
    assert e4m3(lo&255)==e2m1(c),(c,lo)
def quad_transpose(R):  # R[lane] = [r0,r1,r2,r3]
    out=[list(r) for r in R]
    for lane in range(32):
        q=lane&~3
        t=lane&3
        # lane t gets column t: r_i = entry value of lane i's r_t
        out[lane]=[R[q+i][t] for i in range(4)]
    return out
def u32(b,o): return b[o]|(b[o+1]<<8)|(b[o+2]<<16)|(b[o+3]<<24)
def bytes4(x): return [(x>>(8*i))&255 for i in range(4)]
def mma(C, A, B):
    # A[lane]=(a0,a1,a2,a3) u32, B[lane]=(b0,b1) u32 ; C[lane]=[4 floats] accum
    Am=[[0.0]*32 for _ in range(16)]; Bm=[[0.0]*8 for _ in range(32)]
    for lane in range(32):
        g=lane>>2; t=lane&3
        a=A[lane]
        for i in range(16):
            reg=a[i//4]; byte=bytes4(reg)[i%4]
            row=g if (i<4 or 8<=i<12) else g+8
            col=t*4+(i&3)+(16 if i>=8 else 0)
            Am[row][col]=e4m3(byte)
        b=B[lane]
        for i in range(8):
            byte=bytes4(b[i//4])[i%4]
            k=t*4+(i&3)+(16 if i>=4 else 0)
            Bm[k][g]=e4m3(byte)
    for lane in range(32):
        g=lane>>2; t=lane&3
        for i in range(4):
            row=g+(8 if i>=2 else 0); col=2*t+(i&1)
            C[lane][i]+=sum(Am[row][k]*Bm[k][col] for k in range(32))
def moe_ks(K):
    KB=K//128; ks=1
    while ks*2<=8 and KB//(ks*2)>=8: ks*=2
    return ks
def run_gemm(FP4,NT,NM,W,S,w_stride,s_stride,N,K,xq,xs,gather_k,sorted_,tiles,n_tiles,epi):
    KB=K//128; ks=moe_ks(K); rpc=8//ks; kpw=(KB+ks-1)//ks
    for tile in range(len(tiles)):
        if tile>=n_tiles: continue
        ex,first,cnt=tiles[tile]
        for bx in range(N//(16*rpc)):
            cw={}
            for warp in range(8):
                rt=warp%rpc; sl=warp//rpc; n0=(bx*rpc+rt)*16
                kb0=sl*kpw; kb1=min(KB,kb0+kpw)
                c=[[[[0.0]*4 for _ in range(32)] for _ in range(NT)] for _ in range(NM)]
                def brow(pos): return sorted_[pos]//gather_k if gather_k>0 else pos
                for k in range(kb0,kb1):
                    # per lane pointers
                    sx=[[[0.0,0.0] for _ in range(NT)] for _ in range(32)]
                    for lane in range(32):
                        t=lane&3
                        for nt in range(NT):
                            for e in range(2):
                                ts=nt*8+2*t+e
                                sx[lane][nt][e]=e8m0(xs[brow(first+ts)*KB+k]) if ts<cnt else 0.0
                    if not FP4:
                        X0=[[None]*NT for _ in range(32)]; X1=[[None]*NT for _ in range(32)]
                        for lane in range(32):
                            g=lane>>2;t=lane&3
                            for nt in range(NT):
                                tr=nt*8+g
                                if tr<cnt:
                                    base=brow(first+tr)*K+16*t+k*128
                                    X0[lane][nt]=[u32(xq,base+4*i) for i in range(4)]
                                    X1[lane][nt]=[u32(xq,base+64+4*i) for i in range(4)]
                                else:
                                    X0[lane][nt]=[0]*4; X1[lane][nt]=[0]*4
                        for m in range(NM):
                            Wb=W[m]; Sb=S[m]
                            sw=e8m0(Sb[ex*s_stride+(n0>>7)*KB+k])
                            Aw=[];
                            for lane in range(32):
                                g=lane>>2;t=lane&3
                                w0=ex*w_stride+(n0+g)*K+16*t; w1=w0+8*K; o=k*128
                                a=[u32(Wb,w0+o+4*i) for i in range(4)]; ah=[u32(Wb,w0+o+64+4*i) for i in range(4)]
                                c8=[u32(Wb,w1+o+4*i) for i in range(4)]; c8h=[u32(Wb,w1+o+64+4*i) for i in range(4)]
                                Aw.append((a,ah,c8,c8h))
                            for nt in range(NT):
                                pp=[[0.0]*4 for _ in range(32)]
                                mma(pp,[(Aw[l][0][0],Aw[l][2][0],Aw[l][0][1],Aw[l][2][1]) for l in range(32)],[(X0[l][nt][0],X0[l][nt][1]) for l in range(32)])
                                mma(pp,[(Aw[l][0][2],Aw[l][2][2],Aw[l][0][3],Aw[l][2][3]) for l in range(32)],[(X0[l][nt][2],X0[l][nt][3]) for l in range(32)])
                                mma(pp,[(Aw[l][1][0],Aw[l][3][0],Aw[l][1][1],Aw[l][3][1]) for l in range(32)],[(X1[l][nt][0],X1[l][nt][1]) for l in range(32)])
                                mma(pp,[(Aw[l][1][2],Aw[l][3][2],Aw[l][1][3],Aw[l][3][3]) for l in range(32)],[(X1[l][nt][2],X1[l][nt][3]) for l in range(32)])
                                for lane in range(32):
                                    f0=sx[lane][nt][0]*sw; f1=sx[lane][nt][1]*sw
                                    for i,f in enumerate((f0,f1,f0,f1)): c[m][nt][lane][i]+=pp[lane][i]*f
                    else:
                        XF=[[[0,0] for _ in range(4)] for _ in range(32*NT)]
                        xf={}
                        for lane in range(32):
                            g=lane>>2;t=lane&3
                            for nt in range(NT):
                                tr=nt*8+g
                                for bb in range(4):
                                    if tr<cnt:
                                        base=brow(first+tr)*K+8*t+k*128+bb*32
                                        xf[(lane,nt,bb)]=(u32(xq,base),u32(xq,base+4))
                                    else: xf[(lane,nt,bb)]=(0,0)
                        for m in range(NM):
                            Wb=W[m]; Sb=S[m]
                            R=[];Q=[];SC=[]
                            for lane in range(32):
                                g=lane>>2;t=lane&3
                                w0=ex*w_stride+(n0+g)*(K//2)+16*t; w1=w0+8*(K//2); o=k*64
                                R.append([u32(Wb,w0+o+4*i) for i in range(4)])
                                Q.append([u32(Wb,w1+o+4*i) for i in range(4)])
                                s0=ex*s_stride+(n0+g)*(K//32); s1=s0+8*(K//32)
                                SC.append((u32(Sb,s0+k*4),u32(Sb,s1+k*4)))
                            R=quad_transpose(R); Q=quad_transpose(Q)
                            for bb in range(4):
                                A=[]
                                for lane in range(32):
                                    a0,a2=fp4x8_to_e4m3(R[lane][bb]); a1,a3=fp4x8_to_e4m3(Q[lane][bb])
                                    A.append((a0,a1,a2,a3))
                                for nt in range(NT):
                                    pp=[[0.0]*4 for _ in range(32)]
                                    mma(pp,A,[xf[(l,nt,bb)] for l in range(32)])
                                    for lane in range(32):
                                        wg=e8m0((SC[lane][0]>>(8*bb))&255); wq=e8m0((SC[lane][1]>>(8*bb))&255)
                                        s=sx[lane][nt]
                                        c[m][nt][lane][0]+=pp[lane][0]*s[0]*wg
                                        c[m][nt][lane][1]+=pp[lane][1]*s[1]*wg
                                        c[m][nt][lane][2]+=pp[lane][2]*s[0]*wq
                                        c[m][nt][lane][3]+=pp[lane][3]*s[1]*wq
                cw[warp]=c
            # reduction + epilogue
            for warp in range(8):
                rt=warp%rpc; sl=warp//rpc
                if sl!=0: continue
                n0=(bx*rpc+rt)*16
                c=cw[warp]
                for ss in range(1,ks):
                    o=cw[rt+ss*rpc]
                    for m in range(NM):
                        for nt in range(NT):
                            for lane in range(32):
                                for r in range(4): c[m][nt][lane][r]+=o[m][nt][lane][r]
                for nt in range(NT):
                    for lane in range(32):
                        g=lane>>2;t=lane&3
                        for r in range(4):
                            tr=nt*8+2*t+(r&1); n=n0+g+8*(r>>1)
                            if tr>=cnt: continue
                            epi(first+tr,n,[c[m][nt][lane][r] for m in range(NM)])
# ---- a tiny MoE: D=256 (w13 K), I=128; check against direct formulas
def rand_e4m3():
    while True:
        c=random.randrange(256)
        if c&0x7f!=0x7f: return c
def case(FP4,D,I,E,k,rows,bt):
    pairs=rows*k
    ids=[]
    for r in range(rows):
        ch=random.sample(range(E),k); ids+=ch
    # activations: codes+scales directly
    xq=[rand_e4m3() for _ in range(rows*D)]; xs=[random.randrange(118,130) for _ in range(rows*D//128)]
    w13b=I*D//2 if FP4 else I*D; s13b=I*(D//32) if FP4 else (I//128)*(D//128)
    W1=bytearray(random.randrange(256) if FP4 else rand_e4m3() for _ in range(E*w13b))
    W3=bytearray(random.randrange(256) if FP4 else rand_e4m3() for _ in range(E*w13b))
    S1=bytearray(random.randrange(118,127) for _ in range(E*s13b)); S3=bytearray(random.randrange(118,127) for _ in range(E*s13b))
    # sort (reference)
    live=[];tiles=[]
    for e in range(E):
        f=len(live); live+=[i for i,x in enumerate(ids) if x==e]; s=f
        while s<len(live): tiles.append((e,s,min(bt,len(live)-s))); s+=bt
    NT=bt//8
    got={}
    def epi(pos,n,vals): 
        assert (pos,n) not in got; got[(pos,n)]=vals
    run_gemm(FP4,NT,2,[W1,W3],[S1,S3],w13b,s13b,I,D,xq,xs,k,live,tiles,len(tiles),epi)
    assert len(got)==pairs*I,(len(got),pairs*I)
    # direct
    maxrel=0
    for pos in range(pairs):
        p=live[pos]; e=ids[p]; row=p//k
        for n in range(I):
            for m,(Wb,Sb) in enumerate(((W1,S1),(W3,S3))):
                acc=0.0
                for kk in range(D):
                    xv=e4m3(xq[row*D+kk])*e8m0(xs[row*(D//128)+kk//128])
                    if FP4:
                        byte=Wb[e*w13b+n*(D//2)+kk//2]; code=(byte>>4) if kk&1 else byte&15
                        wv=e2m1(code)*e8m0(Sb[e*s13b+n*(D//32)+kk//32])
                    else:
                        wv=e4m3(Wb[e*w13b+n*D+kk])*e8m0(Sb[e*s13b+(n//128)*(D//128)+kk//128])
                    acc+=xv*wv
                g=got[(pos,n)][m]
                maxrel=max(maxrel,abs(g-acc)/(abs(acc)+1e-30))
    print("FP4" if FP4 else "FP8","D",D,"I",I,"rows",rows,"bt",bt,"max rel err",maxrel)
    assert maxrel<1e-9
case(True,256,128,4,2,3,8)
case(True,256,128,3,2,9,16)
case(False,256,128,3,2,5,8)
case(True,2048,128,2,1,2,8)   # ks=2 path (KB=16)
case(False,2048,128,2,1,2,8)
print("gemm emulation ok")
# w2-style: NM = 1, B rows in sorted order (gather_k = 0), output scattered to pair order
def case2(FP4,K,N,E,pairs,bt):
    ids=[random.randrange(E) for _ in range(pairs)]
    live=[];tiles=[]
    for e in range(E):
        f=len(live); live+=[i for i,x in enumerate(ids) if x==e]; s=f
        while s<len(live): tiles.append((e,s,min(bt,len(live)-s))); s+=bt
    hq=[rand_e4m3() for _ in range(pairs*K)]; hs=[random.randrange(118,130) for _ in range(pairs*K//128)]
    wb=N*K//2 if FP4 else N*K; sb=N*(K//32) if FP4 else (N//128)*(K//128)
    W=bytearray(random.randrange(256) if FP4 else rand_e4m3() for _ in range(E*wb)); S=bytearray(random.randrange(118,127) for _ in range(E*sb))
    y={}
    def epi(pos,n,vals):
        p=live[pos]; assert (p,n) not in y; y[(p,n)]=vals[0]
    run_gemm(FP4,bt//8,1,[W,W],[S,S],wb,sb,N,K,hq,hs,0,live,tiles,len(tiles),epi)
    assert len(y)==pairs*N
    for p in range(pairs):
        pos=live.index(p); e=ids[p]
        for n in range(0,N,7):
            acc=0.0
            for kk in range(K):
                xv=e4m3(hq[pos*K+kk])*e8m0(hs[pos*(K//128)+kk//128])
                if FP4:
                    byte=W[e*wb+n*(K//2)+kk//2]; code=(byte>>4) if kk&1 else byte&15
                    wv=e2m1(code)*e8m0(S[e*sb+n*(K//32)+kk//32])
                else: wv=e4m3(W[e*wb+n*K+kk])*e8m0(S[e*sb+(n//128)*(K//128)+kk//128])
                acc+=xv*wv
            assert abs(y[(p,n)]-acc)<=1e-12*abs(acc)+1e-300,(p,n,y[(p,n)],acc)
    print("w2-style ok", "FP4" if FP4 else "FP8", K, N, pairs, bt)
case2(True,128,256,3,20,16)
case2(False,256,128,2,7,8)
case2(True,256,128,2,40,32)
